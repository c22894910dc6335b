"""The CPU fast paths under any tool: ``custom_hooks = [dict(type='CpuFastPathsHook')]``."""

from __future__ import annotations

import functools
from typing import Any

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS
from torch import nn

from ...models.cpu_features import choose_cpu_dtype, requested_cpu_dtype
from ...models.cpu_inference import autocast_inference, optimize_for_cpu_inference, refresh_cast_weights


@HOOKS.register_module()
class CpuFastPathsHook(Hook):
    """Apply :func:`~mmpvt.optimize_for_cpu_inference` to the Runner's model before the run starts.

    Our ``tools/train.py`` and ``tools/test.py`` add it themselves; mmdet's and mmseg's own tools get it
    from a config. It changes no parameter or state-dict key, so checkpoints load and save as before, and
    every shortcut stands aside where it does not apply (autocast, tracing; the inference-only kernels
    in training), so it is safe in every mode. A model on a GPU is left as it is: no shortcut applies there.

    Args:
        dtype: the precision of the PVT's CPU inference (validation and testing): ``'float32'``
            (the default: outputs as the plain model's), ``'bfloat16'``, or ``'auto'``: bf16 where
            the CPU has a bf16 matrix unit (AMX), fp32 elsewhere. The choice and its reason are
            logged. Training is unaffected (``--amp`` chooses its precision).
    """

    priority = 'VERY_HIGH'

    def __init__(self, dtype: str = 'float32') -> None:
        requested_cpu_dtype(dtype)  # refuse an unknown name when the config is built
        self.dtype = dtype

    def before_run(self, runner: Any) -> None:
        """Swap the fast paths into every PVT layer of ``runner.model`` (wrapped or not) if it runs on the CPU."""
        if all(param.device.type == 'cpu' for param in runner.model.parameters()):
            choice = choose_cpu_dtype(self.dtype)
            optimize_for_cpu_inference(runner.model, choice)
            heads = autocast_heads(runner.model, choice.dtype)
            if self.dtype != 'float32':
                after = f'; {", ".join(heads)} under {str(choice.dtype)[6:]} autocast' if heads else ''
                msg = f'CPU inference of the PVT backbone runs in {choice}{after}'
                print_log(msg, logger='current', level=choice.log_level)

    def before_val_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        """Drop the bf16 weight copies before a validation: EMAHook swaps weights through ``.data``."""
        if batch_idx == 0:
            refresh_cast_weights(runner.model)

    def before_test_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        """As :meth:`before_val_iter`, for testing."""
        if batch_idx == 0:
            refresh_cast_weights(runner.model)


def autocast_heads(model: nn.Module, dtype: torch.dtype) -> list[str]:
    """Put the neck and heads of a detector or segmentor under CPU autocast in ``dtype`` for inference.

    With a bf16 backbone these layers would otherwise keep most of the work in fp32 (RetinaNet's
    head costs about as much as PVT-S at 800×1333). Each runs its ``forward`` under autocast
    and hands fp32 on (:func:`~mmpvt.models.cpu_inference.autocast_inference`), so box decoding,
    NMS, RoI extraction, resizing and the metrics see fp32 as before. Only layers made of
    convolutions, linears and norms are taken: any neck, mmdet's anchor-based heads and the
    anchor-free ones except MaskFormer's family, the RoI box and FCN mask heads, and mmseg's
    decode heads. For ``dtype`` fp32 this switches it off again. Returns the names of the
    modules taken (an unwrapped ``model`` or one inside a wrapper's ``module``).
    """
    model = getattr(model, 'module', model)
    taken = []
    for name, module in model.named_modules():
        if name == 'neck' or _plain_head(module):
            if dtype == torch.float32 and not hasattr(module, 'cpu_autocast_dtype'):
                continue
            autocast_inference(module, None if dtype == torch.float32 else dtype)
            taken.append(name)
    return taken


def _plain_head(module: nn.Module) -> bool:
    """True for a head made of convolutions, linears and norms (see :func:`autocast_heads`)."""
    heads, excluded = _head_classes()
    return isinstance(module, heads) and not isinstance(module, excluded)


@functools.cache
def _head_classes() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """The head classes :func:`autocast_heads` takes and those it leaves, of mmdet and mmseg where installed."""
    heads: list[type] = []
    excluded: list[type] = []
    try:
        from mmdet.models.dense_heads import AnchorFreeHead, AnchorHead, MaskFormerHead
        from mmdet.models.roi_heads.bbox_heads import BBoxHead
        from mmdet.models.roi_heads.mask_heads import FCNMaskHead

        heads += [AnchorHead, AnchorFreeHead, BBoxHead, FCNMaskHead]
        excluded.append(MaskFormerHead)
    except ImportError:
        pass
    try:
        from mmseg.models.decode_heads.decode_head import BaseDecodeHead

        heads.append(BaseDecodeHead)
    except ImportError:
        pass
    return tuple(heads), tuple(excluded)
