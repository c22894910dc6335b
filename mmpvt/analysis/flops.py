"""Multiply-add (MAC) and parameter counting that includes attention matrix products.

mmcv's and mmengine's counters see convolutions and linear layers but not the two
matrix products inside ``scaled_dot_product_attention`` (Q·Kᵀ and A·V), which is
where a transformer at detection resolution spends most of its arithmetic. This
counter runs one forward pass with hooks and adds, per module:

- ``nn.Conv2d`` / ``nn.Linear``: output elements × input elements per output;
- :class:`~mmpvt.layers.SpatialReductionAttention`: Q·Kᵀ and A·V via
  :func:`~mmpvt.layers.sra_macs` (its projections and reduction conv are counted as
  the linears and convs they are);
- ``nn.MultiheadAttention`` (mmdet's PVT): its in/out projections, which it runs as
  functional calls (its ``out_proj`` module is never called), plus Q·Kᵀ and A·V.

Normalisation, activations, softmax, pooling and additions are not counted; that is
the convention behind the PVT paper's GFLOPs (which are multiply-adds). The hooks see
the same modules with or without :func:`mmpvt.optimize_for_cpu_inference`.

torch's own ``FlopCounterMode`` gives the same total on the plain model when it is told
how to count the CPU flash-attention op it has no formula for: pass
:data:`SDPA_CPU_FLOP_FORMULA` as its ``custom_mapping``. (It cannot see the oneDNN
kernels of the optimised model; count the plain one.)
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import sdpa_flop_count

from ..layers import SpatialReductionAttention, sra_macs


def _cpu_sdpa_flop(
    query_shape: torch.Size, key_shape: torch.Size, value_shape: torch.Size, *args: Any, **kwargs: Any
) -> int:
    """FLOPs (2 per multiply-add) of Q·Kᵀ and A·V, as torch counts its other SDPA kernels."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


#: ``FlopCounterMode(custom_mapping=SDPA_CPU_FLOP_FORMULA)`` counts the attention products of
#: ``F.scaled_dot_product_attention`` on the CPU, whose flash kernel torch's table leaves out.
SDPA_CPU_FLOP_FORMULA = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flop}


@dataclass
class MacCount:
    """Result of :func:`count_macs`.

    Attributes:
        total: all counted multiply-adds of one forward pass.
        by_kind: ``conv``, ``linear`` and ``attention`` (matrix products) totals.
        by_module: multiply-adds per module name (leaf modules and attention layers).
        params: parameters of the model.
    """

    total: int = 0
    by_kind: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    by_module: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    params: int = 0

    @property
    def gflops(self) -> float:
        """Total in GMACs, the unit the PVT paper calls GFLOPs."""
        return self.total / 1e9

    def add(self, name: str, kind: str, macs: int) -> None:
        self.total += macs
        self.by_kind[kind] += macs
        self.by_module[name] += macs


def _per_output(conv: nn.Conv2d) -> int:
    return conv.in_channels // conv.groups * conv.kernel_size[0] * conv.kernel_size[1]


def _conv_macs(module: nn.Conv2d, out: torch.Tensor) -> int:
    return out.numel() * _per_output(module)


def _linear_macs(module: nn.Linear, out: torch.Tensor) -> int:
    return out.numel() * module.in_features


def _sra_macs(module: SpatialReductionAttention, x: torch.Tensor, hw_shape: tuple[int, int]) -> int:
    """Q·Kᵀ plus A·V of one SRA call on ``x``."""
    products = sra_macs(
        tuple(hw_shape),
        module.embed_dims,
        module.sr_ratio,
        num_heads=module.num_heads,
        linear=module.linear,
        pool_size=module.pool_size,
    )
    return x.shape[0] * products


def _mha_macs(module: nn.MultiheadAttention, query: torch.Tensor, key: torch.Tensor) -> int:
    """Projections plus Q·Kᵀ and A·V of ``nn.MultiheadAttention`` (batch_first or not)."""
    c = module.embed_dim
    if module.batch_first:
        b, n, m = query.shape[0], query.shape[1], key.shape[1]
    else:
        n, b, m = query.shape[0], query.shape[1], key.shape[0]
    projections = (n * c * c) * 2 + (m * c * module.kdim) + (m * c * module.vdim)
    return b * (projections + 2 * n * m * c)


def count_macs(model: nn.Module, run: Callable[[nn.Module], Any]) -> MacCount:
    """Count the multiply-adds of one forward pass of ``model``.

    Args:
        model: any module; it is run once in inference mode, as is.
        run: calls the model, e.g. ``lambda m: m(torch.zeros(1, 3, 224, 224))``.

    Returns:
        The counts, per kind and per module, and the number of parameters.
    """
    result = MacCount(params=sum(p.numel() for p in model.parameters()))
    handles = []

    def hook(name: str) -> Callable[..., None]:
        def count(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any) -> None:
            if isinstance(module, SpatialReductionAttention):
                x = args[0] if args else kwargs['x']
                hw = args[1] if len(args) > 1 else kwargs['hw_shape']
                result.add(name, 'attention', _sra_macs(module, x, hw))
            elif isinstance(module, nn.MultiheadAttention):
                query = args[0] if args else kwargs['query']
                key = args[1] if len(args) > 1 else kwargs.get('key', query)
                result.add(name, 'attention', _mha_macs(module, query, key))
            elif isinstance(module, nn.Conv2d):
                result.add(name, 'conv', _conv_macs(module, out))
            elif isinstance(module, nn.Linear):
                result.add(name, 'linear', _linear_macs(module, out))

        return count

    counted = (nn.Conv2d, nn.Linear, SpatialReductionAttention, nn.MultiheadAttention)
    for name, module in model.named_modules():
        if isinstance(module, counted):
            handles.append(module.register_forward_hook(hook(name), with_kwargs=True))
    try:
        with torch.inference_mode():
            run(model)
    finally:
        for handle in handles:
            handle.remove()
    return result


def backbone_macs(arch: str, hw_shape: tuple[int, int] = (224, 224), **overrides: Any) -> MacCount:
    """Multiply-adds of an mmpvt backbone variant on one ``hw_shape`` image.

    Args:
        arch: a key of :data:`mmpvt.models.pvt.ARCH_SETTINGS`.
        hw_shape: (H, W) of the input image.
        overrides: keyword arguments for the backbone.
    """
    from ..models.pvt import PyramidVisionTransformer

    model = PyramidVisionTransformer.from_arch(arch, **overrides).eval()
    image = torch.zeros(1, model.in_channels, *hw_shape)
    return count_macs(model, lambda m: m(image))


def config_macs(config: str | Any, hw_shape: tuple[int, int], *, backbone_only: bool = False) -> MacCount:
    """Multiply-adds of the model of an mmdet or mmseg config on one ``hw_shape`` image.

    The model is built without loading any weights (they do not change the count: neither a
    checkpoint nor the backbone's ``Pretrained`` file is read) and run once through its
    ``mode='tensor'`` forward: backbone, neck and heads, without post-processing such as NMS.

    Args:
        config: path of an mmengine config with a ``model`` entry, or the config itself.
        hw_shape: (H, W) of the input image.
        backbone_only: count ``model.backbone`` alone.
    """
    from mmengine.config import Config
    from mmengine.registry import MODELS, DefaultScope

    cfg = Config.fromfile(config) if isinstance(config, str) else config
    with DefaultScope.overwrite_default_scope(cfg.get('default_scope', 'mmdet')):
        model = MODELS.build(cfg.model).eval()
    image = torch.zeros(1, 3, *hw_shape)
    if backbone_only:
        return count_macs(model.backbone, lambda m: m(image))
    return count_macs(model, lambda m: m(image, mode='tensor'))
