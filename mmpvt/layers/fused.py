"""Fast paths shared by the PVT layers: convs as GEMMs and fused CPU inference kernels.

Two kinds of helpers, both exact up to fp32 rounding:

- :func:`strided_patch_linear`: a Conv2d whose kernel equals its stride (and has no
  padding) is a matrix product over non-overlapping patches. Gathering the patches
  with one reshape and calling ``F.linear`` is 2–3× faster on CPU than oneDNN's
  convolution for PVT's shapes (kernel 8 stride 8 on 64 channels, …) and works with
  autograd, so training benefits too. It runs on the CPU only (:func:`use_patch_gemm`):
  on CUDA the convolution goes to cuDNN (TF32 by default), the matmul would not.
- :func:`linear_gelu` and :func:`linear_add`: ``gelu(linear(x))`` and
  ``other + linear(x)`` as single oneDNN calls with the activation or the residual
  add as a post-op (the kernels ``torch.compile`` uses on CPU). On the CPU a large
  fresh tensor costs page faults as well as a pass over memory, so skipping the
  separate GELU and residual-add tensors pays more than the arithmetic suggests.
  They have no autograd formula and are used only when :func:`fusable` says so.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

_MKLDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, '_linear_pointwise')
_enabled = True


@contextmanager
def fused_kernels(enabled: bool) -> Iterator[None]:
    """Allow (default) or forbid the fused inference kernels inside the ``with`` block.

    Forbidding them runs the plain module calls, e.g. to compare both paths or to let
    forward hooks see every linear layer.
    """
    global _enabled
    previous, _enabled = _enabled, enabled
    try:
        yield
    finally:
        _enabled = previous


def tracing() -> bool:
    """True while torch.export / torch.compile trace the model (ONNX export included).

    Traced graphs must hold only portable ops with shapes kept symbolic, so the
    eager-only shortcuts (oneDNN kernels, caches, size checks) step aside.
    """
    return torch.compiler.is_exporting() or torch.compiler.is_compiling()


def fusable(x: torch.Tensor, module: nn.Module) -> bool:
    """True if the fused oneDNN inference kernels may replace ``module``'s plain ops on ``x``.

    That is: they are enabled (:func:`fused_kernels`), oneDNN is available, ``x`` is
    an fp32 CPU tensor, no autocast region would change the dtype of the plain ops
    (the kernels take the fp32 weights as they are), nothing needs a gradient and
    ``module`` is in eval mode (so dropout and stochastic depth are off).
    """
    return (
        _enabled
        and _MKLDNN
        and not module.training
        and not torch.is_grad_enabled()
        and x.device.type == 'cpu'
        and x.dtype == torch.float32
        and not torch.is_autocast_enabled('cpu')
        and not tracing()
    )


def use_patch_gemm(x: torch.Tensor, conv: nn.Conv2d) -> bool:
    """True if :func:`strided_patch_linear` should replace ``conv`` on ``x``: a patch conv on a CPU tensor.

    Exact and autograd-safe, so it also runs in training and under autocast (``F.linear``
    and ``conv2d`` autocast alike); elsewhere the convolution stays (cuDNN on CUDA).
    """
    return x.device.type == 'cpu' and is_patch_conv(conv)


def linear_gelu(x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """``F.gelu(linear(x))`` (exact, erf-based GELU) in one oneDNN call; inference only."""
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), linear.weight, linear.bias, 'gelu', [], 'none')


def linear_add(x: torch.Tensor, linear: nn.Linear, other: torch.Tensor) -> torch.Tensor:
    """``other + linear(x)`` in one oneDNN call (the residual as a post-op); inference only."""
    other = other.contiguous()
    return torch.ops.mkldnn._linear_pointwise.binary(x.contiguous(), other, linear.weight, linear.bias, 'add')


def is_patch_conv(conv: nn.Conv2d) -> bool:
    """True if ``conv`` is a non-overlapping patch projection (kernel == stride, no padding)."""
    return (
        conv.kernel_size == conv.stride
        and conv.padding in ((0, 0), 0)
        and conv.dilation == (1, 1)
        and conv.groups == 1
        and conv.padding_mode == 'zeros'
    )


def strided_patch_linear(x_map: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """``conv(x_map)`` for a patch conv (see :func:`is_patch_conv`), returned as tokens.

    Rows and columns that do not fill a whole patch are dropped, as the conv floors.

    Args:
        x_map: (B, C_in, H, W) map; either memory layout works, channels-last (for
            example a transposed token tensor) avoids a strided gather.
        conv: the patch conv; its weight is used as is, so checkpoints are unchanged.

    Returns:
        (B, N, C_out) tokens of the (H // kh)×(W // kw) output map, row-major.
    """
    b, c, h, w = x_map.shape
    kh, kw = conv.kernel_size
    ho, wo = h // kh, w // kw
    weight = conv.weight
    if x_map.is_contiguous(memory_format=torch.channels_last) and c > 1:
        nhwc = x_map.permute(0, 2, 3, 1)[:, : ho * kh, : wo * kw]
        patches = nhwc.reshape(b, ho, kh, wo, kw, c).permute(0, 1, 3, 2, 4, 5)  # (B, H', W', kh, kw, C)
        weight = weight.permute(0, 2, 3, 1)  # (C_out, kh, kw, C) to match
    else:
        nchw = x_map[:, :, : ho * kh, : wo * kw]
        patches = nchw.reshape(b, c, ho, kh, wo, kw).permute(0, 2, 4, 1, 3, 5)  # (B, H', W', C, kh, kw)
    patches = patches.reshape(b, ho * wo, c * kh * kw)
    return F.linear(patches, weight.reshape(weight.shape[0], -1), conv.bias)
