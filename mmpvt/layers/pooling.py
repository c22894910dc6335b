"""Adaptive average pooling written as two matrix products, for export.

ONNX has no adaptive pooling for sizes known only at run time (the reason linear-SRA
PVTv2 breaks ONNX/TensorRT export, whai362/PVT #103). Pooling an H×W map to S×S is
``P_H · X · P_Wᵀ`` with averaging matrices P built from ``arange``, which exports with
dynamic H and W and gives the same numbers as ``F.adaptive_avg_pool2d``.
"""

from __future__ import annotations

import torch


def pooling_matrix(size: int | torch.SymInt, out_size: int, like: torch.Tensor) -> torch.Tensor:
    """(out_size, size) matrix averaging the bins of ``F.adaptive_avg_pool1d``.

    Bin i covers [⌊i·size/out⌋, ⌈(i+1)·size/out⌉), as PyTorch's adaptive pooling does.
    """
    idx = torch.arange(size, device=like.device)
    bins = torch.arange(out_size, device=like.device)
    start = (bins * size) // out_size
    end = ((bins + 1) * size + out_size - 1) // out_size
    mask = ((idx[None, :] >= start[:, None]) & (idx[None, :] < end[:, None])).to(like.dtype)
    return mask / mask.sum(dim=1, keepdim=True)


def adaptive_avg_pool2d_matmul(x: torch.Tensor, out_size: int) -> torch.Tensor:
    """(B, C, H, W) -> (B, C, out_size, out_size), equal to ``F.adaptive_avg_pool2d``."""
    h, w = x.shape[-2:]
    return pooling_matrix(h, out_size, x) @ x @ pooling_matrix(w, out_size, x).transpose(0, 1)
