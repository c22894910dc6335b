"""The parts of a detector that CPU bf16 autocast must leave in fp32: mmcv's CPU ops and box arithmetic.

``tools/train.py --amp`` on a CPU runs the forward under ``torch.autocast('cpu', torch.bfloat16)``
(:class:`~mmpvt.engine.optim.CpuAmpOptimWrapper`). A two-stage detector then hands bf16 maps and
scores to code that needs fp32:

- the RPN's proposals (``predict_by_feat`` of a dense head, called by ``loss_and_predict`` in
  training): mmcv's CPU ``nms`` accepts fp32 only (``expected scalar type Float but found
  BFloat16``), and box coordinates in bf16 are off by up to 4 pixels at 1333 (8 bits of mantissa);
- the RoI extractors: mmcv's CPU ``roi_align`` has no bf16 kernel (``"ROIAlign_forward" not
  implemented for 'BFloat16'``).

:func:`fp32_islands` makes these run with autocast off on fp32 copies of their bf16 inputs
(gradients flow through the casts); the convolutions and linears around them stay in bf16.
Outside a CPU autocast region, and on a GPU (CUDA autocast is another region), they run as before.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn

from ..models.cpu_inference import _RuntimeMixin, _to_float32, _with_mixin


def _fp32_call(method: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``method(*args, **kwargs)``; inside a CPU autocast region, with autocast off and its inputs in fp32."""
    if not torch.is_autocast_enabled('cpu'):
        return method(*args, **kwargs)
    dtype = torch.get_autocast_dtype('cpu')
    with torch.autocast('cpu', enabled=False):
        return method(*_to_float32(args, dtype), **_to_float32(kwargs, dtype))


class Fp32Proposals(_RuntimeMixin):
    """Mixed into a dense head's class: ``predict_by_feat`` (boxes, scores, NMS) in fp32 under CPU autocast."""

    def predict_by_feat(self, *args: Any, **kwargs: Any) -> Any:
        return _fp32_call(super().predict_by_feat, args, kwargs)


class Fp32Forward(_RuntimeMixin):
    """Mixed into a module's class: its ``forward`` in fp32 under CPU autocast (an RoI extractor)."""

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return _fp32_call(super().forward, args, kwargs)


@functools.cache
def _island_classes() -> tuple[tuple[type, ...], tuple[type, ...]]:
    """mmdet's dense heads and RoI extractors (empty where mmdet is not installed: mmseg has neither)."""
    try:
        from mmdet.models.dense_heads.base_dense_head import BaseDenseHead
        from mmdet.models.roi_heads.roi_extractors.base_roi_extractor import BaseRoIExtractor
    except ImportError:
        return (), ()
    return (BaseDenseHead,), (BaseRoIExtractor,)


def fp32_islands(model: nn.Module) -> tuple[list[str], list[str]]:
    """Make the dense heads' box post-processing and the RoI extractors of ``model`` (or of the model a
    distributed wrapper holds) run in fp32 under CPU autocast (see the module). Changes their classes in
    place, once; parameters, state-dict keys and hooks stay, and a pickled model names the plain classes.

    Returns the names of the dense heads and of the RoI extractors it changed. A one-stage detector's head
    is among them but computes as before: only proposals (``loss_and_predict``) call ``predict_by_feat``
    in training.
    """
    dense_heads, extractors = _island_classes()
    heads, rois = [], []
    for name, module in getattr(model, 'module', model).named_modules():
        if isinstance(module, dense_heads) and not isinstance(module, Fp32Proposals):
            _with_mixin(module, Fp32Proposals)
            heads.append(name)
        elif isinstance(module, extractors) and not isinstance(module, Fp32Forward):
            _with_mixin(module, Fp32Forward)
            rois.append(name)
    return heads, rois
