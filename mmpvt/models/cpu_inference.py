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
- :class:`DwConvGeluMlp`: the v2 MLP with ``gelu(dwconv(...))`` as one oneDNN call with GELU as a
  post-op: 2× faster than the two ops on stage 1 of PVTv2-b2 at 512×512 (bf16 5.7 → 2.7 ms,
  fp32 20 → 10 ms, 2-core Xeon). CPU inference only (:func:`kernels_apply`).
- :class:`TokenChunkedBlock`: a block whose MLP half (``x + MLP(LN(x))``) acts on each token
  alone (no depth-wise conv) runs that half on 2048 tokens at a time in inference, so the
  norm, the MLP's hidden layer and the residual add stay in cache.

With ``dtype=torch.bfloat16`` (or ``'auto'`` on a CPU with AMX, :mod:`.cpu_features`) the
PVT additionally runs its inference in bf16 (:class:`CpuPrecisionEntry`): every product
(linears, patch GEMMs, convs, attention) runs in bf16 on bf16 copies of the fp32 weights
(:func:`cast_weight`, cached until a parameter changes; :class:`CastLinear`,
:class:`CastConv2d`), while the residual stream, the norms and the maps stay fp32
(:class:`CastBlock`); the first patch embedding computes in fp32 on the image. The
parameters, the state dict and the fp32 path stay as they are; in training and under
autograd the model runs as before (autocast, ``--amp``, is the training path). Where oneDNN
has no bf16 kernels (a CPU with AVX2 only, :func:`onednn_kernels_take`) the bf16 products
run unfused through ``F.linear``, ``F.conv2d`` and ``F.gelu`` instead of the one-call forms.

This is the only file that calls torch's private ``mkldnn._linear_pointwise``, ``mkldnn._convolution_pointwise``
and ``mkldnn._is_mkldnn_bf16_supported``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..layers import Mlp, PatchEmbed, SpatialReductionAttention
from ..layers.layout import tokens_to_map
from ..layers.tracing import tracing
from .cpu_features import PrecisionChoice, choose_cpu_dtype
from .pvt import PVTBlock, PyramidVisionTransformer

logger = logging.getLogger(__name__)

_MKLDNN = (
    torch.backends.mkldnn.is_available()
    and hasattr(torch.ops.mkldnn, '_linear_pointwise')
    and hasattr(torch.ops.mkldnn, '_convolution_pointwise')
)
#: oneDNN's bf16 kernels need AVX512-BW or AVX-NE-CONVERT: on a CPU with AVX2 only (Zen 1 to 3, older Xeons)
#: ``_linear_pointwise`` refuses bf16 ("could not create a primitive descriptor"). There the bf16 path runs
#: torch's own bf16 ops instead (emulated and slow: see :func:`~mmpvt.models.cpu_features.choose_cpu_dtype`).
#: None until first asked (the answer may depend on oneDNN's instruction-set cap): asked when a bf16 kernel is due.
_MKLDNN_BF16: bool | None = None


def onednn_kernels_take(dtype: torch.dtype) -> bool:
    """True if this CPU's oneDNN runs the fused kernels in ``dtype``: fp32 always, bf16 where ``_MKLDNN_BF16``."""
    global _MKLDNN_BF16
    if not _MKLDNN or dtype not in (torch.float32, torch.bfloat16):
        return False
    if dtype == torch.float32:
        return True
    if _MKLDNN_BF16 is None:
        query = getattr(torch.ops.mkldnn, '_is_mkldnn_bf16_supported', None)
        _MKLDNN_BF16 = bool(query()) if query is not None else False
    return _MKLDNN_BF16


def kernels_apply(x: torch.Tensor, module: nn.Module) -> bool:
    """True if the inference-only shortcuts (oneDNN kernels, chunking, bf16 weight copies) may run on ``x``.

    That is: oneDNN is available, ``x`` is an fp32 or bf16 CPU tensor (the kernels compute in
    ``x``'s dtype, on weights cast to it by :func:`cast_weight`), no autocast region would
    change the dtype of the plain ops, nothing needs a gradient, ``module`` is in eval mode
    (dropout is off) and nothing is being traced.
    """
    return (
        _MKLDNN
        and not module.training
        and not torch.is_grad_enabled()
        and x.device.type == 'cpu'
        and x.dtype in (torch.float32, torch.bfloat16)
        and not torch.is_autocast_enabled('cpu')
        and not tracing()
    )


def cast_weight(
    module: nn.Module,
    name: str,
    dtype: torch.dtype,
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor | None:
    """``module``'s parameter ``name`` in ``dtype`` (after ``prepare``), from a cache that follows the parameter.

    The parameter itself is returned when it already has ``dtype`` and nothing is to be
    prepared, so fp32 inference uses the fp32 weights untouched. A cached copy is
    rebuilt when the parameter is replaced, moved, or changed in place through autograd's
    view of it (an optimizer step, ``load_state_dict``, ``copy_``): its data pointer or
    version counter then differs. Writes through ``param.data`` (mmengine's EMAHook swaps
    weights that way) bump no version: call :func:`refresh_cast_weights` after them
    (:class:`~mmpvt.engine.hooks.CpuFastPathsHook` does before every validation and test).
    """
    param = getattr(module, name)
    if param is None or (param.dtype == dtype and prepare is None):
        return param
    stamp = (param.data_ptr(), param._version, param.device, param.shape)
    cache = module.__dict__.setdefault('_cast_weights', {})
    key = (name, dtype, prepare)
    hit = cache.get(key)
    if hit is None or hit[0] != stamp:
        with torch.no_grad():
            weight = param.detach()
            weight = (prepare(weight) if prepare is not None else weight).to(dtype).contiguous()
        hit = cache[key] = (stamp, weight)
    return hit[1]


def refresh_cast_weights(model: nn.Module) -> None:
    """Drop every cached weight copy of :func:`cast_weight` in ``model``; the next call casts afresh."""
    for module in model.modules():
        module.__dict__.pop('_cast_weights', None)


def fused_linear(
    x: torch.Tensor,
    module: nn.Module,
    attr: str = 'none',
    prepare: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> torch.Tensor:
    """``F.linear(x, W, b)`` with ``attr`` (``'none'`` or ``'gelu'``, exact) as a oneDNN post-op, in ``x``'s dtype.

    W and b are ``module.weight`` (after ``prepare``, which must return a matrix) and
    ``module.bias`` from :func:`cast_weight`: the fp32 parameters themselves for fp32 ``x``,
    cached copies otherwise. CPU inference only (no autograd formula). Where oneDNN has no bf16
    kernels (:func:`onednn_kernels_take`), bf16 ``x`` goes through ``F.linear`` and ``F.gelu``.
    """
    weight = cast_weight(module, 'weight', x.dtype, prepare)
    bias = cast_weight(module, 'bias', x.dtype)
    if not onednn_kernels_take(x.dtype):  # bf16 on an AVX2-only CPU: unfused, GELU on bf16
        out = F.linear(x, weight, bias)
        return F.gelu(out) if attr == 'gelu' else out
    return torch.ops.mkldnn._linear_pointwise(x.contiguous(), weight, bias, attr, [], 'none' if attr == 'gelu' else '')


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

    In inference with ``x_map`` in another dtype than the conv's weight (bf16 activations, fp32
    weights), the GEMM runs in ``x_map``'s dtype on a cached copy of the weight matrix.
    """
    b, c, h, w = x_map.shape
    kh, kw = conv.kernel_size
    ho, wo = h // kh, w // kw
    if x_map.is_contiguous(memory_format=torch.channels_last) and c > 1:
        nhwc = x_map.permute(0, 2, 3, 1)[:, : ho * kh, : wo * kw]
        patches = nhwc.reshape(b, ho, kh, wo, kw, c).permute(0, 1, 3, 2, 4, 5)  # (B, H', W', kh, kw, C)
        matrix = _nhwc_weight_matrix  # (C_out, kh·kw·C) to match
    else:
        nchw = x_map[:, :, : ho * kh, : wo * kw]
        patches = nchw.reshape(b, c, ho, kh, wo, kw).permute(0, 2, 4, 1, 3, 5)  # (B, H', W', C, kh, kw)
        matrix = _nchw_weight_matrix
    patches = patches.reshape(b, ho * wo, c * kh * kw)
    dtype = getattr(conv, 'compute_dtype', None) or x_map.dtype
    if not dtype == x_map.dtype == conv.weight.dtype and kernels_apply(x_map, conv):
        return fused_linear(patches.to(dtype), conv, prepare=matrix)
    return F.linear(patches, matrix(conv.weight), conv.bias)


def _nhwc_weight_matrix(weight: torch.Tensor) -> torch.Tensor:
    return weight.permute(0, 2, 3, 1).reshape(weight.shape[0], -1)


def _nchw_weight_matrix(weight: torch.Tensor) -> torch.Tensor:
    return weight.reshape(weight.shape[0], -1)


def linear_gelu(x: torch.Tensor, linear: nn.Linear) -> torch.Tensor:
    """``F.gelu(linear(x))`` in one oneDNN call (GELU as a post-op), in ``x``'s dtype; CPU inference only.

    Two ops where oneDNN has no kernel in ``x``'s dtype (bf16 on an AVX2-only CPU, see :func:`fused_linear`).
    """
    return fused_linear(x, linear, 'gelu')


class PatchGemmConv2d(nn.Conv2d):
    """A patch conv (kernel == stride, no padding) that runs on the CPU as one GEMM over its patches.

    Attributes:
        compute_dtype: the GEMM's dtype in inference (None: the input's); set by
            :func:`optimize_for_cpu_inference` with a lower precision.
        output_dtype: in inference, the result's dtype (None: the GEMM's). The first patch
            embedding of a bf16 PVT computes in fp32 on the fp32 image (0.2 % of the FLOPs;
            it halves stage 1's error) and hands bf16 tokens on.
    """

    compute_dtype: torch.dtype | None = None
    output_dtype: torch.dtype | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C_in, H, W) -> (B, C_out, H // k, W // k), the conv's values, in channels-last layout.

        The channels-last result is a view of the GEMM's (B, N, C_out) tokens, so the
        caller's ``.flatten(2).transpose(1, 2)`` gets them back without a copy.
        """
        _b, _c, h, w = x.shape
        kh, kw = self.kernel_size
        if x.device.type != 'cpu' or tracing() or h < kh or w < kw:  # the conv says what is wrong with x
            return super().forward(x)
        tokens = strided_patch_linear(x, self)  # (B, N, C_out)
        if self.output_dtype is not None and kernels_apply(x, self):
            tokens = tokens.to(self.output_dtype)
        return tokens_to_map(tokens, (h // kh, w // kw))


def _watched(module: nn.Module) -> bool:
    """True if a forward hook would see ``module``'s call: the fused kernel must then not skip it."""
    return bool(
        module._forward_hooks
        or module._forward_pre_hooks
        or nn.modules.module._global_forward_hooks
        or nn.modules.module._global_forward_pre_hooks
    )


class GeluFusedMlp(Mlp):
    """A v1 MLP (``fc1 -> GELU -> fc2``) whose ``gelu(fc1(x))`` is one oneDNN call in CPU inference.

    The kernel replaces the calls of ``fc1`` and ``act``, so it steps aside (the plain
    :meth:`Mlp.forward` runs) whenever a forward hook watches either of them, besides the
    conditions of :func:`kernels_apply`. ``compute_dtype``: the kernel's dtype (None: the input's).
    """

    compute_dtype: torch.dtype | None = None

    def forward(self, x: torch.Tensor, hw_shape: tuple[int, int]) -> torch.Tensor:
        """x: (B, N, C) tokens of an H×W map -> (B, N, C)."""
        if not kernels_apply(x, self) or _watched(self.fc1) or _watched(self.act):
            return super().forward(x, hw_shape)
        dtype = self.compute_dtype or x.dtype
        return self.drop(self.fc2(self.drop(linear_gelu(x.to(dtype), self.fc1))))


class DwConvGeluMlp(Mlp):
    """A v2 MLP (``fc1 -> 3×3 depth-wise conv -> GELU -> fc2``), its conv and GELU one oneDNN call in CPU inference.

    The kernel replaces the calls of ``dwconv`` and ``act``, so it steps aside (the plain
    :meth:`Mlp.forward` runs) whenever a forward hook watches either of them, besides the
    conditions of :func:`kernels_apply`. The conv runs on the channels-last map of the
    hidden tokens and returns that layout, so no copy is made on either side. In bf16 the
    GELU acts on the conv's fp32 accumulator, one rounding fewer than the two ops (where oneDNN
    has bf16 kernels; else the two ops in bf16, :func:`onednn_kernels_take`).
    ``compute_dtype``: the kernel's dtype (None: the input's).
    """

    compute_dtype: torch.dtype | None = None

    def forward(self, x: torch.Tensor, hw_shape: tuple[int, int]) -> torch.Tensor:
        """x: (B, N, C) tokens of an H×W map -> (B, N, C)."""
        if not kernels_apply(x, self) or _watched(self.dwconv) or _watched(self.act):
            return super().forward(x, hw_shape)
        dtype = self.compute_dtype or x.dtype
        hidden = self.fc1(x).to(dtype)
        if self.relu:
            hidden = F.relu(hidden)
        conv = self.dwconv
        weight, bias = cast_weight(conv, 'weight', dtype), cast_weight(conv, 'bias', dtype)
        hidden = tokens_to_map(hidden, hw_shape)
        if onednn_kernels_take(dtype):
            hidden = torch.ops.mkldnn._convolution_pointwise(
                hidden,
                weight,
                bias,
                conv.padding,
                conv.stride,
                conv.dilation,
                conv.groups,
                'gelu',
                [],
                'none',
            )
        else:  # bf16 on an AVX2-only CPU: unfused, GELU on bf16
            hidden = F.gelu(F.conv2d(hidden, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups))
        return self.drop(self.fc2(self.drop(hidden.flatten(2).transpose(1, 2))))


class TokenChunkedBlock(PVTBlock):
    """A PVT block whose MLP half runs in inference on ``chunk_tokens`` fp32 tokens at a time.

    Stage 1's MLP hidden layer at 800×1333 is 66650×512 floats (136 MB); 2048 tokens of it
    (4 MB) stay in cache between ``fc1`` and ``fc2``, and so do the norm before and the
    residual add after. bf16 tokens go 8192 at a time (``chunk_tokens_bf16``): on one core with
    AMX 4096 and 8192 measured alike and 10 % faster than unchunked PVT-S at 800×1333, and
    fewer, larger chunks lose less on an oversubscribed machine, where every parallel op waits
    for a time slice. Only blocks whose MLP has no depth-wise conv (PVT v1) are chunked: that
    conv mixes neighbouring tokens.
    """

    chunk_tokens = 2048
    chunk_tokens_bf16 = 8192

    def mlp_residual(self, x: torch.Tensor, hw_shape: tuple[int, int]) -> torch.Tensor:
        """x: (B, N, C) tokens of an H×W map -> ``x + MLP(LN(x))``, (B, N, C)."""
        chunk = self.chunk_tokens if x.dtype == torch.float32 else self.chunk_tokens_bf16
        if not kernels_apply(x, self) or x.shape[1] <= chunk or self.mlp.dwconv is not None:
            return super().mlp_residual(x, hw_shape)
        out = torch.empty_like(x)
        for start in range(0, x.shape[1], chunk):
            part = slice(start, start + chunk)
            out[:, part] = super().mlp_residual(x[:, part], hw_shape)
        return out


class CastBlock(TokenChunkedBlock):
    """A block of a bf16 PVT (:class:`CpuPrecisionEntry`): products in bf16, the residual stream in fp32.

    The tokens between the layers stay fp32 and each half adds its bf16 result to them in
    fp32: rounding the stream to bf16 at each of PVT-S's 32 residual adds put the error at
    1.5e-2 of the output scale (800×1333, random weights); in fp32 it is 5e-3 and the rest
    comes from the bf16 products. In inference the block runs on ``chunk_tokens`` queries
    at a time after computing the keys and values of the whole map once: the queries,
    attention, projection and residual add of a chunk stay in cache, and so, in v1 blocks
    (token-wise MLP), does the MLP half that follows. PVTv2's MLP half (its depth-wise conv
    mixes neighbouring tokens) runs on the whole map. Hooks on the attention's own layers
    fire once per chunk; with a hook on the attention module itself, or with
    ``compute_dtype`` None or fp32, the block runs as :class:`TokenChunkedBlock`.
    """

    compute_dtype: torch.dtype | None = None
    chunk_tokens_mixed = 8192

    def forward(self, x: torch.Tensor, hw_shape: tuple[int, int]) -> torch.Tensor:
        """x: (B, N, C) tokens of an H×W map -> (B, N, C), fp32 tokens for fp32 ``x``."""
        dtype = self.compute_dtype
        if dtype in (None, x.dtype) or x.dtype != torch.float32 or not kernels_apply(x, self) or _watched(self.attn):
            return super().forward(x, hw_shape)
        attn = self.attn
        attn._check_tokens(x, hw_shape)
        normed = self.norm1(x)
        heads = attn.attend_heads(normed, *attn.keys_values(normed, hw_shape))  # one call: K, V packed once
        tokenwise = self.mlp.dwconv is None
        out = torch.empty_like(x)
        for start in range(0, x.shape[1], self.chunk_tokens_mixed):
            part = slice(start, start + self.chunk_tokens_mixed)
            if tokenwise:
                chunk = x[:, part] + attn.project(heads[:, part])
                torch.add(chunk, self.mlp(self.norm2(chunk), hw_shape), out=out[:, part])
            else:
                torch.add(x[:, part], attn.project(heads[:, part]), out=out[:, part])
        return out if tokenwise else PVTBlock.mlp_residual(self, out, hw_shape)


class CastLinear(nn.Linear):
    """A Linear that, in CPU inference on tokens of another dtype than its weight, runs in the tokens' dtype.

    The bf16 path's linears (:class:`CpuPrecisionEntry`): one oneDNN call on cached bf16
    copies of the fp32 weight and bias (:func:`cast_weight`), with the bias added in the
    kernel rather than broadcast into the output first (``F.linear`` where oneDNN has no
    bf16 kernels, :func:`fused_linear`). Everywhere else the plain Linear.
    ``compute_dtype``: the product's dtype in inference (None: the input's).
    """

    compute_dtype: torch.dtype | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (..., in_features) -> (..., out_features)."""
        dtype = self.compute_dtype or x.dtype
        if not kernels_apply(x, self) or dtype == x.dtype == self.weight.dtype:
            return super().forward(x)
        return fused_linear(x.to(dtype), self)


class CastConv2d(nn.Conv2d):
    """A Conv2d that, in CPU inference on a map of another dtype than its weight, runs in the map's dtype.

    The bf16 path's overlapping patch embeddings, depth-wise convs and linear-SRA 1×1 convs
    (PVTv2) use cached bf16 copies of the weight and bias; everywhere else the plain Conv2d.
    ``compute_dtype`` and ``output_dtype`` as in :class:`PatchGemmConv2d`.
    """

    compute_dtype: torch.dtype | None = None
    output_dtype: torch.dtype | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, C_in, H, W) -> (B, C_out, H', W')."""
        dtype = self.compute_dtype or x.dtype
        if not kernels_apply(x, self):
            return super().forward(x)
        if dtype == x.dtype == self.weight.dtype:
            out = super().forward(x)
        else:
            out = self._conv_forward(x.to(dtype), cast_weight(self, 'weight', dtype), cast_weight(self, 'bias', dtype))
        return out if self.output_dtype is None else out.to(self.output_dtype)


class _RuntimeMixin(nn.Module):
    """A mixin that :func:`_with_mixin` puts in front of a module's own class at run time.

    The mixed class is made at run time, so a pickled module names its plain class and its
    mixins (a module can have several: a head under autocast at test time and an fp32 island in
    ``--amp`` training), and gets them back, in the same order, when loaded.
    """

    def __reduce_ex__(self, protocol: Any) -> tuple[Any, ...]:
        """Pickle as the plain class (the mixed classes are made at run time), mixing the mixins in when loaded."""
        rebuild, (cls, *args), *state = super().__reduce_ex__(protocol)
        mixins = []
        while cls in _MIXED_CLASSES.values():  # peel the mixins off, the last one mixed in first
            mixin, cls = cls.__bases__
            mixins.append(mixin)
        return (_restore_mixed, (rebuild, tuple(reversed(mixins)), cls, *args), *state)


_MIXED_CLASSES: dict[tuple[type, type], type] = {}


def _restore_mixed(rebuild: Callable[..., Any], mixins: type | tuple[type, ...], cls: type, *args: Any) -> nn.Module:
    """Unpickle a module saved with runtime mixins: build the plain class, mix the mixins in again
    (one mixin, not a tuple, in what was pickled before a module could have several)."""
    module = rebuild(cls, *args)
    for mixin in mixins if isinstance(mixins, tuple) else (mixins,):
        _with_mixin(module, mixin)
    return module


def _with_mixin(module: nn.Module, mixin: type) -> None:
    """Change ``module``'s class to a subclass of it that mixes in ``mixin`` (once)."""
    cls = type(module)
    if issubclass(cls, mixin):
        return
    if (mixin, cls) not in _MIXED_CLASSES:
        _MIXED_CLASSES[mixin, cls] = type(cls.__name__, (mixin, cls), {'__module__': cls.__module__})
    module.__class__ = _MIXED_CLASSES[mixin, cls]


class CpuPrecisionEntry(_RuntimeMixin):
    """Mixed into a PVT's class by :func:`optimize_for_cpu_inference`: runs its CPU inference in ``cpu_dtype``.

    In bf16 CPU inference (eval mode, no gradient, not tracing) of an fp32 input the backbone
    runs with autocast off (its products cast their inputs to bf16 themselves, on cached
    weight copies; the residual stream stays fp32, :class:`CastBlock`), and the maps come
    back in fp32, or in autocast's dtype inside an autocast region. Everywhere else,
    and with ``cpu_dtype=torch.float32``, the PVT's own ``forward`` runs unchanged.

    Attributes:
        cpu_dtype: the dtype of its CPU inference.
        cpu_precision: that choice and its reason (:func:`choose_cpu_dtype`), for the log.
    """

    cpu_dtype: torch.dtype = torch.float32
    cpu_precision: PrecisionChoice | None = None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """x: (B, C_in, H, W) images -> the PVT's maps, in ``x``'s dtype (autocast's inside autocast)."""
        if self.cpu_dtype == torch.float32 or x.dtype != torch.float32 or not _entry_applies(x, self):
            return super().forward(x)
        out_dtype = torch.get_autocast_dtype('cpu') if torch.is_autocast_enabled('cpu') else x.dtype
        with torch.autocast('cpu', enabled=False):  # each product casts its own input (_cast_layers)
            outs = super().forward(x)
        return tuple(out.to(out_dtype) for out in outs)


def _entry_applies(x: torch.Tensor, module: nn.Module) -> bool:
    """Like :func:`kernels_apply`, but an autocast region is allowed: the entry switches it off inside."""
    return _MKLDNN and not module.training and not torch.is_grad_enabled() and x.device.type == 'cpu' and not tracing()


class CpuAutocastEntry(_RuntimeMixin):
    """Mixed into a module's class by :func:`autocast_inference`: its CPU inference under bf16 autocast, fp32 out.

    In CPU inference (eval mode, no gradient, not tracing, no autocast region already) the
    module's ``forward`` runs under ``torch.autocast('cpu', cpu_autocast_dtype)`` and every
    tensor of that dtype in its result (tuples, lists and dicts of them too) comes back in fp32,
    so whatever reads it (box decoding, NMS, resizing, metrics) gets fp32 as before.
    Everywhere else, and with ``cpu_autocast_dtype`` None, the module's own ``forward`` runs.
    """

    cpu_autocast_dtype: torch.dtype | None = None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        """The module's own ``forward``, under autocast in CPU inference (see the class)."""
        dtype = self.cpu_autocast_dtype
        if (
            dtype is None
            or self.training
            or torch.is_grad_enabled()
            or torch.is_autocast_enabled('cpu')
            or tracing()
            or any(param.device.type != 'cpu' for param in self.parameters())
        ):
            return super().forward(*args, **kwargs)
        with torch.autocast('cpu', dtype):
            out = super().forward(*args, **kwargs)
        return _to_float32(out, dtype)


def _to_float32(out: Any, dtype: torch.dtype) -> Any:
    """``out`` with every tensor of ``dtype`` in it (in tuples, lists and dicts too) cast to fp32.

    A container holding no such tensor is returned as it is; other objects (mmengine's
    ``InstanceData``, boxes classes) are not looked into.
    """
    if isinstance(out, torch.Tensor):
        return out.float() if out.dtype == dtype else out
    if isinstance(out, (tuple, list)):
        items = [_to_float32(item, dtype) for item in out]
        if all(new is old for new, old in zip(items, out)):
            return out
        return type(out)(*items) if hasattr(out, '_fields') else type(out)(items)
    if isinstance(out, dict):
        values = {key: _to_float32(value, dtype) for key, value in out.items()}
        if all(values[key] is value for key, value in out.items()):
            return out
        return type(out)(values.items())
    return out


def autocast_inference(module: nn.Module, dtype: torch.dtype | None = torch.bfloat16) -> nn.Module:
    """Run ``module``'s CPU inference under ``torch.autocast('cpu', dtype)``, its outputs back in fp32.

    For the layers after a bf16 backbone (a detector's neck and heads, a segmentor's decode
    heads): their convolutions and linears then run in bf16 as well. Changes the module's
    class in place (:class:`CpuAutocastEntry`); its parameters, state-dict keys and hooks stay.
    ``dtype=None`` switches it off again. Returns ``module``.
    """
    _with_mixin(module, CpuAutocastEntry)
    module.cpu_autocast_dtype = dtype
    return module


def optimize_for_cpu_inference(
    model: nn.Module, dtype: str | torch.dtype | PrecisionChoice = torch.float32
) -> nn.Module:
    """Switch on the CPU fast paths in every PVT layer of ``model`` (a backbone or a whole detector).

    Changes, in place, the class of:

    - every patch conv of a PVT layer (kernel == stride, no padding: PVT v1's patch
      embeddings, the SR reductions of v1 and v2) to :class:`PatchGemmConv2d`;
    - every MLP whose exact GELU directly follows a plain ``fc1`` (v1) to :class:`GeluFusedMlp`;
    - every MLP whose exact GELU follows a 3×3 depth-wise conv (v2) to :class:`DwConvGeluMlp`;
    - every block with a token-wise (v1) MLP to :class:`TokenChunkedBlock`.

    Parameters, buffers, submodules, state-dict keys and registered hooks are unchanged,
    outputs equal the plain model's to fp32 rounding, and each changed module runs its
    plain path under autograd (except the exact patch GEMM), autocast, off the CPU, in
    training mode and while tracing. In fp32 CPU inference, hooks inside a chunked MLP
    half fire once per chunk, and ``FlopCounterMode`` sees the kernels, not the layers:
    count FLOPs on the plain model. PVTv2's overlapping patch embeddings are left plain:
    no shortcut measured faster for them. Applying it twice changes nothing more.

    With a lower ``dtype`` every PVT also gets :class:`CpuPrecisionEntry` mixed into its
    class, its linears and other convs become :class:`CastLinear` / :class:`CastConv2d` and
    its blocks :class:`CastBlock`: its CPU inference then runs its products in that dtype on
    cached copies of the fp32 weights, its residual stream in fp32, and its maps come back
    in fp32. Applying the step again with ``torch.float32`` switches that off (the classes
    stay; they run the fp32 path).

    Args:
        model: the model; changed in place.
        dtype: ``torch.float32`` (default: outputs as the plain model's), ``torch.bfloat16``
            (or ``'bfloat16'``), or ``'auto'``: bf16 where the CPU has a bf16 matrix unit,
            else fp32 (:func:`~mmpvt.models.cpu_features.choose_cpu_dtype`, which is logged),
            or a choice that function made. bf16 asked for by name where it is slower than
            fp32 (no usable AMX) is honoured with a warning in the log.

    Returns:
        ``model`` itself.
    """
    choice = dtype if isinstance(dtype, PrecisionChoice) else choose_cpu_dtype(dtype)
    if dtype == 'auto' or (choice.slower and not isinstance(dtype, PrecisionChoice)):  # a caller's choice: its log
        logger.log(choice.log_level, 'mmpvt CPU inference runs in %s', choice)
    cast = choice.dtype != torch.float32
    entries = []
    for module in list(model.modules()):
        if isinstance(module, PatchEmbed):
            _use_patch_gemm(module.proj)
        elif isinstance(module, SpatialReductionAttention) and not module.linear and module.sr is not None:
            _use_patch_gemm(module.sr)
        elif type(module) is PVTBlock and module.mlp.dwconv is None:
            module.__class__ = TokenChunkedBlock
        if _plain_gelu_mlp(module):
            module.__class__ = GeluFusedMlp
        elif _plain_dwconv_gelu_mlp(module):
            module.__class__ = DwConvGeluMlp
        if isinstance(module, PyramidVisionTransformer) and (cast or isinstance(module, CpuPrecisionEntry)):
            entries.append(module)
    for pvt in entries:  # after the loop: the patch convs must have become GEMMs first
        _with_mixin(pvt, CpuPrecisionEntry)
        pvt.cpu_dtype, pvt.cpu_precision = choice.dtype, choice
        _cast_layers(pvt)
    return model


def _cast_layers(pvt: nn.Module) -> None:
    """Every plain Linear, Conv2d and block of ``pvt`` to :class:`CastLinear`, :class:`CastConv2d`, :class:`CastBlock`.

    The patch GEMMs stay. Every patch embedding hands on fp32 tokens (the residual stream,
    see :class:`CastBlock`); the first one also computes in fp32, on the fp32 image (0.2 % of
    the FLOPs).
    """
    for module in pvt.modules():
        if type(module) is nn.Linear:
            module.__class__ = CastLinear
        elif type(module) is nn.Conv2d:
            module.__class__ = CastConv2d
        elif type(module) in (PVTBlock, TokenChunkedBlock):
            module.__class__ = CastBlock
        if isinstance(module, (PatchGemmConv2d, GeluFusedMlp, DwConvGeluMlp, CastLinear, CastConv2d, CastBlock)):
            module.compute_dtype = pvt.cpu_dtype
    for stage in pvt.stages:
        stage.patch_embed.proj.output_dtype = torch.float32
    pvt.stages[0].patch_embed.proj.compute_dtype = None


def cpu_precision(model: nn.Module) -> PrecisionChoice | None:
    """The precision chosen for the first PVT in ``model`` by :func:`optimize_for_cpu_inference`, if any."""
    return next((m.cpu_precision for m in model.modules() if isinstance(m, CpuPrecisionEntry)), None)


def _plain_dwconv_gelu_mlp(module: nn.Module) -> bool:
    """True for an unmodified v2 MLP: a 3×3 depth-wise conv (zero padding 1, stride 1) then exact GELU."""
    conv = module.dwconv if type(module) is Mlp else None
    return (
        conv is not None
        and type(conv) in (nn.Conv2d, CastConv2d)
        and conv.kernel_size == (3, 3)
        and conv.stride == (1, 1)
        and conv.padding == (1, 1)
        and conv.dilation == (1, 1)
        and conv.groups == conv.in_channels == conv.out_channels
        and conv.padding_mode == 'zeros'
        and type(module.act) is nn.GELU
        and module.act.approximate == 'none'
    )


def _plain_gelu_mlp(module: nn.Module) -> bool:
    """True for an unmodified v1 MLP: plain ``fc1``, exact GELU, no depth-wise conv or ReLU."""
    return (
        type(module) is Mlp
        and module.dwconv is None
        and not module.relu
        and type(module.fc1) in (nn.Linear, CastLinear)
        and type(module.act) is nn.GELU
        and module.act.approximate == 'none'
    )


def _use_patch_gemm(conv: nn.Conv2d) -> None:
    if type(conv) is nn.Conv2d and is_patch_conv(conv):
        conv.__class__ = PatchGemmConv2d
