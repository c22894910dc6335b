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
) -> None:
    """Export ``model`` (in eval mode) to ONNX with dynamic H and W (multiples of 32).

    Args:
        model: a backbone, or a :class:`TensorForward`-wrapped mmdet/mmseg model.
        path: the .onnx file to write.
        hw_shape: height and width of the example input.
        opset: ONNX opset (>= 17).
        max_size: largest height/width the graph must accept.
    """
    check_export_shape(hw_shape)
    if opset < 17:
        raise ValueError(f'opset must be >= 17, got {opset}')
    model.eval()
    example = torch.randn(1, 3, *hw_shape)
    h = Dim('h_blocks', min=1, max=max_size // SIZE_DIVISOR)
    w = Dim('w_blocks', min=1, max=max_size // SIZE_DIVISOR)
    torch.onnx.export(
        model,
        (example,),
        os.fspath(path),
        dynamo=True,
        opset_version=opset,
        input_names=['image'],
        dynamic_shapes={'x': {2: SIZE_DIVISOR * h, 3: SIZE_DIVISOR * w}},
        verbose=False,
    )


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
