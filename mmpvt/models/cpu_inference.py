"""The CPU fast paths of PVT, applied in one opt-in step: :func:`optimize_for_cpu_inference`.

The model's own ``forward`` is plain module calls, so forward hooks, ``FlopCounterMode``,
autocast, ``torch.compile`` and export see every layer. This step changes the class of
some submodules in place (as ``torch.nn.utils.parametrize`` does), so parameters,
buffers, hooks and state-dict keys stay as they are; each new class runs the plain
computation whenever its shortcut does not apply:

- :class:`PatchGemmConv2d`: a Conv2d whose kernel equals its stride (PVT v1's patch
  embeddings, every SR reduction) as one GEMM over gathered patches, 2–3× faster than
  oneDNN's convolution for PVT's shapes. Exact and differentiable, so it also runs under
  autograd and autocast; it steps aside off the CPU (cuDNN on CUDA, TF32 by default, would
  not match) and while tracing.
- :class:`GeluFusedMlp`: the v1 MLP with ``gelu(fc1(x))`` as one oneDNN call with GELU as a post-op
  (the kernel ``torch.compile`` uses on CPU), skipping the separate GELU pass over the
  MLP's largest tensor. No autograd formula: fp32 CPU inference only (:func:`kernels_apply`).
- :class:`TokenChunkedBlock`: a block whose MLP half (``x + MLP(LN(x))``) acts on each token
  alone (no depth-wise conv) runs that half on 2048 tokens at a time in inference, so the
  norm, the MLP's hidden layer and the residual add stay in cache.

This is the only file that calls torch's private ``mkldnn._linear_pointwise``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import Mlp, PatchEmbed, SpatialReductionAttention
from ..layers.tracing import tracing
from .pvt import PVTBlock

_MKLDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, '_linear_pointwise')


def kernels_apply(x: torch.Tensor, module: nn.Module) -> bool:
    """True if the inference-only shortcuts (:class:`GeluFusedMlp`, :class:`TokenChunkedBlock`) may run on ``x``.

    That is: oneDNN is available, ``x`` is an fp32 CPU tensor, no autocast region would
    change the dtype of the plain ops (the kernels take the fp32 weights as they are),
    nothing needs a gradient, ``module`` is in eval mode (dropout is off) and nothing
    is being traced.
    """
    return (
        _MKLDNN
        and not module.training
        and not torch.is_grad_enabled()
        and x.device.type == 'cpu'
        and x.dtype == torch.float32
        and not torch.is_autocast_enabled('cpu')
        and not tracing()
    )


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


def linear_gelu(x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """``F.gelu(linear(x))`` in one oneDNN call (GELU as a post-op); fp32 CPU inference only."""
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), linear.weight, linear.bias, 'gelu', [], 'none')


class PatchGemmConv2d(nn.Conv2d):
    """A patch conv (kernel == stride, no padding) that runs on the CPU as one GEMM over its patches."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C_in, H, W) -> (B, C_out, H // k, W // k), the conv's values, in channels-last layout.

        The channels-last result is a view of the GEMM's (B, N, C_out) tokens, so the
        caller's ``.flatten(2).transpose(1, 2)`` gets them back without a copy.
        """
        b, _c, h, w = x.shape
        kh, kw = self.kernel_size
        if x.device.type != 'cpu' or tracing() or h < kh or w < kw:  # the conv says what is wrong with x
            return super().forward(x)
        tokens = strided_patch_linear(x, self)  # (B, N, C_out)
        return tokens.transpose(1, 2).reshape(b, self.out_channels, h // kh, w // kw)


def _watched(module: nn.Module) -> bool:
    """True if a forward hook would see ``module``'s call: the fused kernel must then not skip it."""
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or nn.modules.module._global_forward_hooks
        or nn.modules.module._global_forward_pre_hooks
    )


class GeluFusedMlp(Mlp):
    """A v1 MLP (``fc1 -> GELU -> fc2``) whose ``gelu(fc1(x))`` is one oneDNN call in fp32 CPU inference.

    The kernel replaces the calls of ``fc1`` and ``act``, so it steps aside (the plain
    :meth:`Mlp.forward` runs) whenever a forward hook watches either of them, besides the
    conditions of :func:`kernels_apply`.
    """

    def forward(self, x: torch.Tensor, hw_shape: tuple[int, int]) -> torch.Tensor:
        """x: (B, N, C) tokens of an H×W map -> (B, N, C)."""
        if not kernels_apply(x, self) or _watched(self.fc1) or _watched(self.act):
            return super().forward(x, hw_shape)
        return self.drop(self.fc2(self.drop(linear_gelu(x, self.fc1))))


class TokenChunkedBlock(PVTBlock):
    """A PVT block whose MLP half runs in inference on ``chunk_tokens`` tokens at a time.

    Stage 1's MLP hidden layer at 800×1333 is 66650×512 floats (136 MB); 2048 tokens of it
    (4 MB) stay in cache between ``fc1`` and ``fc2``, and so do the norm before and the
    residual add after. Only for blocks whose MLP has no depth-wise conv (PVT v1), which
    mixes neighbouring tokens.
    """

    chunk_tokens = 2048

    def mlp_residual(self, x: torch.Tensor, hw_shape: tuple[int, int]) -> torch.Tensor:
        """x: (B, N, C) tokens of an H×W map -> ``x + MLP(LN(x))``, (B, N, C)."""
        if x.shape[1] <= self.chunk_tokens or not kernels_apply(x, self):
            return super().mlp_residual(x, hw_shape)
        out = torch.empty_like(x)
        for start in range(0, x.shape[1], self.chunk_tokens):
            part = slice(start, start + self.chunk_tokens)
            out[:, part] = super().mlp_residual(x[:, part], hw_shape)
        return out


def optimize_for_cpu_inference(model: nn.Module) -> nn.Module:
    """Switch on the CPU fast paths in every PVT layer of ``model`` (a backbone or a whole detector).

    Changes, in place, the class of:

    - every patch conv of a PVT layer (kernel == stride, no padding: PVT v1's patch
      embeddings, the SR reductions of v1 and v2) to :class:`PatchGemmConv2d`;
    - every MLP whose exact GELU directly follows a plain ``fc1`` (v1) to :class:`GeluFusedMlp`;
    - every block with such a token-wise MLP to :class:`TokenChunkedBlock`.

    Parameters, buffers, submodules, state-dict keys and registered hooks are unchanged,
    outputs equal the plain model's to fp32 rounding, and each changed module runs its
    plain path under autograd (except the exact patch GEMM), autocast, off the CPU, in
    training mode and while tracing. In fp32 CPU inference, hooks inside a chunked MLP
    half fire once per chunk, and ``FlopCounterMode`` sees the kernels, not the layers:
    count FLOPs on the plain model. PVTv2's overlapping patch embeddings and depth-wise-conv MLPs are left
    plain: no shortcut measured faster for them. Applying it twice changes nothing more.

    Returns:
        ``model`` itself.
    """
    for module in list(model.modules()):
        if isinstance(module, PatchEmbed):
            _use_patch_gemm(module.proj)
        elif isinstance(module, SpatialReductionAttention) and not module.linear and module.sr is not None:
            _use_patch_gemm(module.sr)
        elif type(module) is PVTBlock and module.mlp.dwconv is None:
            module.__class__ = TokenChunkedBlock
        if _plain_gelu_mlp(module):
            module.__class__ = GeluFusedMlp
    return model


def _plain_gelu_mlp(module: nn.Module) -> bool:
    """True for an unmodified v1 MLP: plain ``fc1``, exact GELU, no depth-wise conv or ReLU."""
    return (
        type(module) is Mlp
        and module.dwconv is None
        and not module.relu
        and type(module.fc1) is nn.Linear
        and type(module.act) is nn.GELU
        and module.act.approximate == 'none'
    )


def _use_patch_gemm(conv: nn.Conv2d) -> None:
    if type(conv) is nn.Conv2d and is_patch_conv(conv):
        conv.__class__ = PatchGemmConv2d
