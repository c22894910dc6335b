"""The Pyramid Vision Transformer, v1 and v2, as one plain ``torch.nn`` module.

PVT v1: Wang et al., "Pyramid Vision Transformer", ICCV 2021.
PVT v2: Wang et al., "PVT v2: Improved Baselines with Pyramid Vision Transformer", CVMJ 2022.
v2 differs from v1 by four switches of the same model: overlapping patch embedding,
a depth-wise conv in the MLP, no absolute position embeddings plus a LayerNorm after
each stage, and (for the ``-li`` variants) linear SRA.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..layers import DropPath, Mlp, PatchEmbed, SpatialReductionAttention
from ..layers.layout import nchw_contiguous, tokens_to_map
from ..layers.tracing import tracing

_V1 = dict(
    embed_dims=(64, 128, 320, 512),
    num_heads=(1, 2, 5, 8),
    mlp_ratios=(8, 8, 4, 4),
    sr_ratios=(8, 4, 2, 1),
    patch_sizes=(4, 2, 2, 2),
)
_V2 = dict(
    _V1,
    patch_sizes=(7, 3, 3, 3),
    strides=(4, 2, 2, 2),
    paddings=(3, 1, 1, 1),
    use_pos_embed=False,
    mlp_dwconv=True,
    norm_after_stage=True,
)

#: Per-variant settings; any of them can be overridden by keyword.
ARCH_SETTINGS: dict[str, dict[str, Any]] = {
    'tiny': dict(_V1, depths=(2, 2, 2, 2)),
    'small': dict(_V1, depths=(3, 4, 6, 3)),
    'medium': dict(_V1, depths=(3, 4, 18, 3)),
    'large': dict(_V1, depths=(3, 8, 27, 3)),
    'b0': dict(_V2, embed_dims=(32, 64, 160, 256), depths=(2, 2, 2, 2)),
    'b1': dict(_V2, depths=(2, 2, 2, 2)),
    'b2': dict(_V2, depths=(3, 4, 6, 3)),
    'b2_li': dict(_V2, depths=(3, 4, 6, 3), linear_sra=True),
    'b3': dict(_V2, depths=(3, 4, 18, 3)),
    'b4': dict(_V2, depths=(3, 8, 27, 3)),
    'b5': dict(_V2, depths=(3, 6, 40, 3), mlp_ratios=(4, 4, 4, 4)),
}


def arch_kwargs(arch: str | None, **overrides: Any) -> dict[str, Any]:
    """Keyword arguments of :class:`PyramidVisionTransformer` for a named variant.

    Args:
        arch: a key of :data:`ARCH_SETTINGS`, or None to use only ``overrides``.
        overrides: keyword arguments that replace the variant's settings.
    """
    if arch is None:
        return dict(overrides)
    if arch not in ARCH_SETTINGS:
        raise ValueError(f'unknown PVT arch {arch!r}; valid archs: {", ".join(ARCH_SETTINGS)}')
    return {**ARCH_SETTINGS[arch], **overrides}


class PVTBlock(nn.Module):
    """Pre-norm transformer block: ``x + SRA(LN(x))`` then ``x + MLP(LN(x))``."""

    def __init__(
        self,
        embed_dims: int,
        num_heads: int,
        mlp_ratio: float,
        sr_ratio: int,
        *,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        linear_sra: bool = False,
        mlp_dwconv: bool = False,
        norm_eps: float = 1e-6,
        embed_norm_eps: float = 1e-5,
        fused_attn: bool = True,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dims, eps=norm_eps)
        self.attn = SpatialReductionAttention(
            embed_dims,
            num_heads,
            sr_ratio,
            qkv_bias=qkv_bias,
            attn_drop=attn_drop,
            proj_drop=drop,
            linear=linear_sra,
            fused_attn=fused_attn,
            norm_eps=embed_norm_eps,
        )
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(embed_dims, eps=norm_eps)
        self.mlp = Mlp(embed_dims, int(embed_dims * mlp_ratio), dwconv=mlp_dwconv, relu=linear_sra, drop=drop)

    def forward(self, x: torch.Tensor, hw_shape: tuple[int, int]) -> torch.Tensor:
        """x: (B, N, C) tokens of an H×W map -> (B, N, C)."""
        x = x + self.drop_path(self.attn(self.norm1(x), hw_shape))
        return self.mlp_residual(x, hw_shape)

    def mlp_residual(self, x: torch.Tensor, hw_shape: tuple[int, int]) -> torch.Tensor:
        """The block's second half, ``x + MLP(LN(x))``: (B, N, C) -> (B, N, C).

        Without the depth-wise conv (v1) it acts on each token alone, so it may run on
        chunks of tokens (:class:`mmpvt.models.cpu_inference.TokenChunkedBlock`).
        """
        return x + self.drop_path(self.mlp(self.norm2(x), hw_shape))


class PVTStage(nn.Module):
    """Patch embedding, optional position embedding, blocks and optional norm."""

    def __init__(
        self,
        in_channels: int,
        embed_dims: int,
        depth: int,
        *,
        patch_size: int,
        stride: int,
        padding: int,
        pos_shape: int | None,
        drop_rate: float,
        drop_path_rates: Sequence[float],
        norm_after_stage: bool,
        norm_eps: float,
        embed_norm_eps: float,
        **block_kwargs: Any,
    ) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(in_channels, embed_dims, patch_size, stride, padding, norm_eps=embed_norm_eps)
        self.pos_shape = pos_shape
        self.pos_embed = nn.Parameter(torch.zeros(1, pos_shape * pos_shape, embed_dims)) if pos_shape else None
        self.pos_drop = nn.Dropout(drop_rate)
        self.blocks = nn.ModuleList(
            PVTBlock(
                embed_dims,
                drop=drop_rate,
                drop_path=dpr,
                norm_eps=norm_eps,
                embed_norm_eps=embed_norm_eps,
                **block_kwargs,
            )
            for dpr in drop_path_rates
        )
        self.norm = nn.LayerNorm(embed_dims, eps=norm_eps) if norm_after_stage else None
        self.with_cp = False

    def resized_pos_embed(self, hw_shape: tuple[int, int]) -> torch.Tensor:
        """The position embedding resampled to ``hw_shape`` (:func:`resample_pos_embed`): (1, H·W, C).

        Resampled on every call (tens of microseconds; a cache keyed on the parameter's
        version would go stale when weights are swapped with ``.data.copy_``, as
        mmengine's EMAHook does). While tracing for export it always interpolates (an
        identity at the pretraining size), so the graph keeps H and W symbolic.
        """
        pos = self.pos_embed
        if hw_shape == (self.pos_shape, self.pos_shape) and not tracing():
            return pos
        if not torch.is_grad_enabled():  # torch's bilinear takes 3-4× longer on a tensor that requires grad
            pos = pos.detach()
        return resample_pos_embed(pos, hw_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C_in, H_in, W_in) map -> (B, C, H, W) map in channels-last memory layout.

        The result is a view of the tokens (no copy); the next stage's patch
        embedding reads that layout directly.
        """
        x, hw_shape = self.patch_embed(x)
        if self.pos_embed is not None:  # in the tokens' dtype: bf16 tokens stay bf16 beside fp32 weights
            x = self.pos_drop(x + self.resized_pos_embed(hw_shape).to(x.dtype))
        # Checkpoint whenever the blocks train with grad, also when x itself needs none
        # (frozen_stages=0 freezes the patch embedding before stage 1's blocks).
        checkpointing = self.with_cp and self.training and torch.is_grad_enabled()
        for block in self.blocks:
            x = checkpoint(block, x, hw_shape, use_reentrant=False) if checkpointing else block(x, hw_shape)
        if self.norm is not None:
            x = self.norm(x)
        return tokens_to_map(x, hw_shape)


class PyramidVisionTransformer(nn.Module):
    """PVT v1/v2 backbone returning the feature pyramid at strides 4, 8, 16, 32.

    Build a named variant with ``PyramidVisionTransformer.from_arch('small')`` or pass
    every per-stage tuple explicitly; the tuples must all have one entry per stage.

    Args:
        embed_dims: channels of each stage.
        depths: blocks in each stage.
        num_heads: attention heads in each stage.
        mlp_ratios: MLP hidden channels / channels, per stage.
        sr_ratios: spatial reduction ratio of the attention, per stage.
        patch_sizes: kernel of each stage's patch embedding.
        strides: stride of each patch embedding; None means ``patch_sizes`` (v1).
        paddings: padding of each patch embedding; None means no padding (v1).
        in_channels: channels of the input image.
        use_pos_embed: add learnt absolute position embeddings (v1).
        pretrain_img_size: image size the position embeddings are laid out for.
        mlp_dwconv: 3×3 depth-wise conv in the MLP (v2).
        linear_sra: linear SRA with 7×7 pooling (v2-li).
        norm_after_stage: LayerNorm at the end of each stage (v2).
        qkv_bias: bias in the query and key/value projections.
        drop_rate: dropout after position embedding, attention projection and MLP.
        attn_drop_rate: dropout on attention weights.
        drop_path_rate: stochastic depth of the last block; it grows linearly from 0.
        norm_eps: epsilon of the blocks' LayerNorms and the stage norms (v2).
        embed_norm_eps: epsilon of the LayerNorms after each patch-embedding conv and
            after the SR reduction. The official release (the code that trained the
            published weights) uses torch's default 1e-5 there; mmdet uses 1e-6.
        out_indices: stages whose outputs are returned (0-based).
        with_cp: activation checkpointing of every block while training.
        fused_attn: use ``scaled_dot_product_attention`` (default) or the explicit path.
    """

    def __init__(
        self,
        *,
        embed_dims: Sequence[int] = _V1['embed_dims'],
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = _V1['num_heads'],
        mlp_ratios: Sequence[float] = _V1['mlp_ratios'],
        sr_ratios: Sequence[int] = _V1['sr_ratios'],
        patch_sizes: Sequence[int] = _V1['patch_sizes'],
        strides: Sequence[int] | None = None,
        paddings: Sequence[int] | None = None,
        in_channels: int = 3,
        use_pos_embed: bool = True,
        pretrain_img_size: int = 224,
        mlp_dwconv: bool = False,
        linear_sra: bool = False,
        norm_after_stage: bool = False,
        qkv_bias: bool = True,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.1,
        norm_eps: float = 1e-6,
        embed_norm_eps: float = 1e-5,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        with_cp: bool = False,
        fused_attn: bool = True,
    ) -> None:
        super().__init__()
        strides = tuple(patch_sizes) if strides is None else tuple(strides)
        paddings = (0,) * len(patch_sizes) if paddings is None else tuple(paddings)
        per_stage = dict(
            embed_dims=embed_dims,
            depths=depths,
            num_heads=num_heads,
            mlp_ratios=mlp_ratios,
            sr_ratios=sr_ratios,
            patch_sizes=patch_sizes,
            strides=strides,
            paddings=paddings,
        )
        self.num_stages = _check_per_stage(per_stage)
        for i, (dims, heads) in enumerate(zip(embed_dims, num_heads)):
            if dims % heads != 0:
                raise ValueError(f'stage {i}: embed_dims {dims} is not divisible by num_heads {heads}')
        self.out_indices = _check_indices(out_indices, self.num_stages)
        self.in_channels = in_channels

        dprs = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        self.stages = nn.ModuleList()
        reduction, start = 1, 0
        self.feature_info: list[dict[str, Any]] = []
        for i in range(self.num_stages):
            reduction *= strides[i]
            self.stages.append(
                PVTStage(
                    in_channels if i == 0 else embed_dims[i - 1],
                    embed_dims[i],
                    depths[i],
                    patch_size=patch_sizes[i],
                    stride=strides[i],
                    padding=paddings[i],
                    pos_shape=pretrain_img_size // reduction if use_pos_embed else None,
                    drop_rate=drop_rate,
                    drop_path_rates=dprs[start : start + depths[i]],
                    norm_after_stage=norm_after_stage,
                    norm_eps=norm_eps,
                    embed_norm_eps=embed_norm_eps,
                    num_heads=num_heads[i],
                    mlp_ratio=mlp_ratios[i],
                    sr_ratio=sr_ratios[i],
                    qkv_bias=qkv_bias,
                    attn_drop=attn_drop_rate,
                    linear_sra=linear_sra,
                    mlp_dwconv=mlp_dwconv,
                    fused_attn=fused_attn,
                )
            )
            start += depths[i]
            self.feature_info.append(dict(num_chs=embed_dims[i], reduction=reduction, module=f'stages.{i}'))
        self.with_cp = with_cp
        self.min_input_size = self._smallest_valid_input()
        self.reset_parameters()

    @classmethod
    def from_arch(cls, arch: str, **overrides: Any) -> PyramidVisionTransformer:
        """Build a named variant (see :data:`ARCH_SETTINGS`), overriding any setting."""
        return cls(**arch_kwargs(arch, **overrides))

    @property
    def with_cp(self) -> bool:
        return all(stage.with_cp for stage in self.stages)

    @with_cp.setter
    def with_cp(self, value: bool) -> None:
        for stage in self.stages:
            stage.with_cp = value

    @property
    def out_channels(self) -> tuple[int, ...]:
        """Channels of each returned map, in ``out_indices`` order (what a neck expects)."""
        return tuple(self.feature_info[i]['num_chs'] for i in self.out_indices)

    @property
    def out_strides(self) -> tuple[int, ...]:
        """Stride of each returned map relative to the input, in ``out_indices`` order."""
        return tuple(self.feature_info[i]['reduction'] for i in self.out_indices)

    def reset_parameters(self) -> None:
        """Deterministic (given the RNG state) initialisation, as in the official release."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                _trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_out))
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        for stage in self.stages:
            if stage.pos_embed is not None:
                _trunc_normal_(stage.pos_embed, std=0.02)

    def stage_shapes(self, hw_shape: tuple[int, int]) -> list[tuple[int, int]]:
        """Output map size of every stage for an input image of ``hw_shape``."""
        shapes, (h, w) = [], hw_shape
        for stage in self.stages:
            h, w = stage.patch_embed.output_size(h), stage.patch_embed.output_size(w)
            shapes.append((h, w))
        return shapes

    def _too_small(self, hw_shape: tuple[int, int]) -> str | None:
        """Why an input of ``hw_shape`` cannot run, or None if it can."""
        for i, (h, w) in enumerate(self.stage_shapes(hw_shape)):
            attn = self.stages[i].blocks[0].attn if len(self.stages[i].blocks) else None
            need = 1 if attn is None or attn.linear else attn.sr_ratio
            if h < need or w < need:
                return f'stage {i} map would be {h}×{w}, smaller than its {need}×{need} minimum (sr_ratio)'
        return None

    def _smallest_valid_input(self) -> int:
        size = 1
        while self._too_small((size, size)) is not None and size < 4096:
            size += 1
        return size

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError saying what is wrong if ``x`` is not a valid input."""
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f'PVT expects a 4-D (B, C, H, W) tensor, got {shape}')
        if x.shape[1] != self.in_channels:
            raise ValueError(
                f'PVT expects {self.in_channels} input channels, got {x.shape[1]} (input shape {tuple(x.shape)})'
            )
        if tracing():
            return  # export states its own size constraints (mmpvt.export)
        reason = self._too_small((x.shape[2], x.shape[3]))
        if reason is not None:
            m = self.min_input_size
            raise ValueError(
                f'input of {x.shape[2]}×{x.shape[3]} pixels is too small for this PVT: {reason}; '
                f'height and width must be at least {m} (pad the image to at least {m}×{m})'
            )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x: (B, C_in, H, W) images -> one (B, C_i, H/s_i, W/s_i) map per ``out_indices``."""
        self.check_input(x)
        outs = []
        for i, stage in enumerate(self.stages[: max(self.out_indices) + 1]):
            x = stage(x)
            if i in self.out_indices:
                outs.append(nchw_contiguous(x))  # the usual NCHW layout for necks and heads
        return tuple(outs)


def resample_pos_embed(pos_embed: torch.Tensor, hw_shape: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resample a square-grid position embedding to an H×W grid.

    The one resampler of the package: the model applies it at run time for inputs of
    another size, :mod:`mmpvt.convert` to checkpoints laid out for another grid.

    Args:
        pos_embed: (1, S·S, C) embedding of an S×S grid, in any floating dtype.
        hw_shape: (H, W) of the grid wanted.

    Returns:
        (1, H·W, C) embedding in ``pos_embed``'s dtype (interpolated in at least fp32).
    """
    side = math.isqrt(pos_embed.shape[1])
    grid = pos_embed.reshape(1, side, side, -1).permute(0, 3, 1, 2)  # (1, C, S, S)
    grid = grid.to(torch.promote_types(grid.dtype, torch.float32))  # fp16 checkpoints: no half bilinear on CPU
    grid = F.interpolate(grid, size=tuple(hw_shape), mode='bilinear', align_corners=False)
    return grid.flatten(2).transpose(1, 2).to(pos_embed.dtype)


@torch.no_grad()
def _trunc_normal_(tensor: torch.Tensor, std: float) -> torch.Tensor:
    """The official init ``trunc_normal_(std=.02)`` (truncated at ±2 absolute, i.e. ±100 std).

    Sampling a normal and clamping to [-2, 2] gives the same distribution for any
    practical purpose and is several times faster than torch's resampling version,
    which dominated building the large variants.
    """
    return tensor.normal_(0.0, std).clamp_(-2.0, 2.0)


#: The per-stage arguments of :class:`PyramidVisionTransformer`, in the order errors list them.
_PER_STAGE = ('embed_dims', 'depths', 'num_heads', 'mlp_ratios', 'sr_ratios', 'patch_sizes', 'strides', 'paddings')


def count_stages(settings: Mapping[str, Any]) -> int:
    """Number of stages of ``PyramidVisionTransformer(**settings)``, without building it.

    Raises the constructor's ValueError if the per-stage tuples differ in length, so a
    wrapper can check its own stage-dependent arguments before any heavy work.
    """
    defaults = inspect.signature(PyramidVisionTransformer).parameters
    per_stage = {name: settings.get(name, defaults[name].default) for name in _PER_STAGE}
    for name in ('strides', 'paddings'):  # None: one per patch size, as in the constructor
        if per_stage[name] is None:
            per_stage[name] = per_stage['patch_sizes']
    return _check_per_stage(per_stage)


def _check_per_stage(per_stage: dict[str, Sequence[Any]]) -> int:
    """Number of stages; raises if the per-stage tuples differ in length."""
    lengths = {name: len(value) for name, value in per_stage.items()}
    if len(set(lengths.values())) != 1:
        listed = ', '.join(f'{name}={len_}' for name, len_ in lengths.items())
        raise ValueError(f'per-stage settings must all have one entry per stage, got lengths {listed}')
    return next(iter(lengths.values()))


def _check_indices(out_indices: Sequence[int], num_stages: int) -> tuple[int, ...]:
    indices = tuple(out_indices)
    if not indices or any(not 0 <= i < num_stages for i in indices) or len(set(indices)) != len(indices):
        raise ValueError(
            f'out_indices must be distinct stage indices in [0, {num_stages - 1}], got {tuple(out_indices)}'
        )
    return tuple(sorted(indices))
