"""Pictures that explain PVT: SRA attention maps of a query pixel, and the feature pyramid.

The attention of a query pixel is read from the last block of each stage: its keys
sit on the spatially reduced map (⌊H/r⌋×⌊W/r⌋, or 7×7 for linear SRA), so every
stage reaches the whole image while scoring only N/r² keys per query.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from .layers import SpatialReductionAttention
from .models.pvt import PyramidVisionTransformer

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


@dataclass
class StageAttention:
    """Attention of one query token over the keys of one stage (averaged over heads)."""

    stage: int
    query_hw: tuple[int, int]  # the query's position on the stage's token map
    map_hw: tuple[int, int]  # the stage's token map
    weights: np.ndarray  # (h_kv, w_kv), sums to 1
    sr_ratio: int
    linear: bool


def image_to_tensor(rgb: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 RGB -> (1, 3, H, W) float tensor normalised with ImageNet statistics."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f'expected an (H, W, 3) RGB image, got shape {rgb.shape}')
    x = torch.from_numpy(np.ascontiguousarray(rgb)).float().permute(2, 0, 1)[None]
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _query_weights(attn: SpatialReductionAttention, x: torch.Tensor, hw: tuple[int, int], index: int) -> torch.Tensor:
    """Head-averaged attention probabilities of token ``index`` over the reduced keys: (M,)."""
    return attn.attention_weights(x, hw, slice(index, index + 1))[0, :, 0].mean(dim=0)  # from (1, heads, 1, M)


@torch.no_grad()
def stage_attention(
    model: PyramidVisionTransformer, image: torch.Tensor, query_xy: tuple[int, int]
) -> tuple[list[StageAttention], tuple[torch.Tensor, ...]]:
    """Attention maps of the pixel ``query_xy`` (x, y in input pixels) at every stage.

    Returns:
        One :class:`StageAttention` per stage (from its last block), and the model's outputs.
    """
    x_px, y_px = query_xy
    if not (0 <= y_px < image.shape[2] and 0 <= x_px < image.shape[3]):
        raise ValueError(f'query pixel (x={x_px}, y={y_px}) is outside the {image.shape[3]}×{image.shape[2]} image')
    captured: dict[int, tuple[torch.Tensor, tuple[int, int]]] = {}
    hooks = []
    for i, stage in enumerate(model.stages):
        block = stage.blocks[-1]
        hooks.append(block.register_forward_pre_hook(lambda _m, args, i=i: captured.__setitem__(i, (args[0], args[1]))))
    try:
        outs = model(image)
    finally:
        for hook in hooks:
            hook.remove()
    results = []
    for i, stage in enumerate(model.stages):
        x, hw = captured[i]
        block = stage.blocks[-1]
        stride = model.feature_info[i]['reduction']
        qh, qw = min(y_px // stride, hw[0] - 1), min(x_px // stride, hw[1] - 1)
        weights = _query_weights(block.attn, block.norm1(x), hw, qh * hw[1] + qw)
        kv_hw = block.attn.reduced_shape(hw)
        results.append(
            StageAttention(i, (qh, qw), hw, weights.reshape(kv_hw).numpy(), block.attn.sr_ratio, block.attn.linear)
        )
    return results, outs


def feature_energy(outs: Sequence[torch.Tensor]) -> list[np.ndarray]:
    """Per pyramid level, the channel-wise L2 norm of the first image, scaled to [0, 1]."""
    maps = []
    for out in outs:
        energy = out[0].float().norm(dim=0)
        energy = (energy - energy.min()) / (energy.max() - energy.min()).clamp_min(1e-12)
        maps.append(energy.numpy())
    return maps


def _upsample(grid: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    t = torch.from_numpy(grid)[None, None].float()
    return F.interpolate(t, size=hw, mode='nearest')[0, 0].numpy()


def draw_attention(rgb: np.ndarray, maps: Sequence[StageAttention], query_xy: tuple[int, int], out_file: str) -> None:
    """Save one panel per stage: the query's attention over the image, as a PNG."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(maps) + 1, figsize=(3.2 * (len(maps) + 1), 3.6))
    axes[0].imshow(rgb)
    axes[0].set_title('image and query pixel')
    for ax, m in zip(axes[1:], maps):
        ax.imshow(rgb)
        ax.imshow(_upsample(m.weights, rgb.shape[:2]), cmap='inferno', alpha=0.65)
        kind = 'linear SRA, 7×7 pool' if m.linear else f'r={m.sr_ratio}'
        h, w = m.weights.shape
        ax.set_title(f'stage {m.stage + 1}: {m.map_hw[0]}×{m.map_hw[1]} queries\n{h}×{w} keys ({kind})', fontsize=9)
    for ax in axes:
        ax.plot(*query_xy, marker='x', color='cyan', markersize=10, mew=2)
        ax.axis('off')
    fig.suptitle('SRA: every stage attends over the whole image, with r² fewer keys', fontsize=10)
    fig.tight_layout()
    fig.savefig(out_file, dpi=100)
    plt.close(fig)


def draw_features(rgb: np.ndarray, energies: Sequence[np.ndarray], strides: Sequence[int], out_file: str) -> None:
    """Save the image and the feature energy of each pyramid level as a PNG."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(energies) + 1, figsize=(3.2 * (len(energies) + 1), 3.4))
    axes[0].imshow(rgb)
    axes[0].set_title('image')
    for ax, energy, stride in zip(axes[1:], energies, strides):
        ax.imshow(energy, cmap='viridis')
        ax.set_title(f'stride {stride}: {energy.shape[0]}×{energy.shape[1]}')
    for ax in axes:
        ax.axis('off')
    fig.tight_layout()
    fig.savefig(out_file, dpi=100)
    plt.close(fig)
