"""ONNX export of PVT backbones (and whole models' tensor forward) with dynamic height and width.

Exported graphs take inputs whose height and width are multiples of 32 (what mmdet's
and mmseg's pipelines pad to): with that promise torch.export proves every stage's
shape arithmetic and keeps H and W symbolic. Linear SRA's adaptive pooling is
exported as two matrix products (:mod:`mmpvt.layers.pooling`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.export import Dim

#: Height and width of exported models must be multiples of this.
SIZE_DIVISOR = 32


class TensorForward(nn.Module):
    """Wraps an mmdet/mmseg model so ``forward(x)`` is its tensor forward (no post-processing)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model._forward(x)
        return tuple(_flatten(out))


def _flatten(out: object) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (list, tuple)):
        return [t for item in out for t in _flatten(item)]
    raise TypeError(f'cannot export an output of type {type(out).__name__}')


#: What the tensor forward of an OpenMMLab head returns, one name per group of per-level tensors.
HEAD_OUTPUTS: dict[str, tuple[str, ...]] = {
    'AnchorHead': ('cls_score', 'bbox_pred'),
    'RetinaHead': ('cls_score', 'bbox_pred'),
    'ATSSHead': ('cls_score', 'bbox_pred', 'centerness'),
    'FCOSHead': ('cls_score', 'bbox_pred', 'centerness'),
    'GFLHead': ('cls_score', 'bbox_pred'),
}


def output_names(model: nn.Module, example: torch.Tensor) -> list[str]:
    """Names for the exported graph's outputs, instead of the ops' (``conv2d_26``).

    A PVT backbone: ``stage1`` … ``stage4`` (its ``out_indices``); a segmentor: ``seg_logits``; a detector
    whose head is in :data:`HEAD_OUTPUTS`: ``cls_score_0`` … ``bbox_pred_4`` (group, pyramid level);
    anything else: ``output0``, ``output1``, … in the flattened order.
    """
    indices = getattr(model, 'out_indices', None)
    if indices is not None and not isinstance(model, TensorForward):
        return [f'stage{i + 1}' for i in indices]
    inner = model.model if isinstance(model, TensorForward) else model
    with torch.no_grad():
        structure = inner._forward(example) if isinstance(model, TensorForward) else model(example)
    count = len(_flatten(structure))
    if hasattr(inner, 'decode_head') and count == 1:
        return ['seg_logits']
    groups = HEAD_OUTPUTS.get(type(getattr(inner, 'bbox_head', None)).__name__)
    if groups and isinstance(structure, tuple | list) and len(structure) == len(groups):
        names = [f'{group}_{level}' for group, items in zip(groups, structure) for level in range(len(_flatten(items)))]
        if len(names) == count:
            return names
    return [f'output{i}' for i in range(count)]


def check_export_shape(hw_shape: Sequence[int]) -> None:
    """Raise ValueError unless ``hw_shape`` is a valid example size for export."""
    if len(hw_shape) != 2 or any(s <= 0 or s % SIZE_DIVISOR for s in hw_shape):
        raise ValueError(
            f'export shape must be two positive multiples of {SIZE_DIVISOR} (height width), got {tuple(hw_shape)}'
        )


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    hw_shape: Sequence[int] = (224, 224),
    *,
    opset: int = 18,
    max_size: int = 4096,
) -> list[str]:
    """Export ``model`` (in eval mode) to ONNX with dynamic H and W (multiples of 32).

    torch writes the weights to ``PATH.data`` beside the graph (ONNX external data): keep the two files
    together.

    Args:
        model: a backbone, or a :class:`TensorForward`-wrapped mmdet/mmseg model.
        path: the .onnx file to write.
        hw_shape: height and width of the example input.
        opset: ONNX opset (>= 17).
        max_size: largest height/width the graph must accept.

    Returns:
        The names of the graph's outputs (:func:`output_names`).
    """
    check_export_shape(hw_shape)
    if opset < 17:
        raise ValueError(f'opset must be >= 17, got {opset}')
    model.eval()
    example = torch.randn(1, 3, *hw_shape)
    names = output_names(model, example)
    h = Dim('h_blocks', min=1, max=max_size // SIZE_DIVISOR)
    w = Dim('w_blocks', min=1, max=max_size // SIZE_DIVISOR)
    torch.onnx.export(
        model,
        (example,),
        os.fspath(path),
        dynamo=True,
        opset_version=opset,
        input_names=['image'],
        output_names=names,
        dynamic_shapes={'x': {2: SIZE_DIVISOR * h, 3: SIZE_DIVISOR * w}},
        verbose=False,
    )
    return names


def max_abs_diffs(path: str | os.PathLike[str], model: nn.Module, x: torch.Tensor) -> list[float]:
    """Max |onnxruntime − PyTorch| of every output of ``model`` on input ``x``."""
    import onnxruntime as ort

    session = ort.InferenceSession(os.fspath(path), providers=['CPUExecutionProvider'])
    with torch.no_grad():
        expected = _flatten(model(x))
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    if len(got) != len(expected):
        raise ValueError(f'ONNX model returned {len(got)} outputs, PyTorch {len(expected)}')
    return [float(np.abs(g - e.numpy()).max()) for g, e in zip(got, expected)]
