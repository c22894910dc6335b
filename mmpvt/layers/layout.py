"""Memory-layout changes of the maps PVT hands to necks and heads."""

from __future__ import annotations

import torch

from .tracing import tracing


def tokens_to_map(x: torch.Tensor, hw_shape: tuple[int, int]) -> torch.Tensor:
    """(B, N, C) tokens of an H×W map -> the (B, C, H, W) map, a channels-last view (no copy for contiguous tokens).

    Not ``x.transpose(1, 2).reshape(b, c, h, w)``: for B = 1 that view gets a batch stride of
    C, and torch's CPU convolutions then do not take the tensor for channels-last: they copy
    it to NCHW and compute there. PVTv2's depth-wise conv at 512×512 (512×128×128, bf16, 2-core
    Xeon) took 43 ms that way against 1.5 ms on this view.
    """
    b, _n, c = x.shape
    return x.reshape(b, *hw_shape, c).permute(0, 3, 1, 2)


#: Tokens per block of :func:`nchw_contiguous`: 1024 × C fits in L2 with its transpose.
BLOCK_TOKENS = 1024


def nchw_contiguous(x_map: torch.Tensor) -> torch.Tensor:
    """``x_map.contiguous()`` (NCHW) of a (B, C, H, W) map, the values unchanged.

    PVT's maps are channels-last views of its (B, H·W, C) tokens. torch's CPU copy turns
    such a map around 3.2× slower than a copy in blocks of :data:`BLOCK_TOKENS` tokens, each
    transposed while in cache (stage 1 at 800×1333, C = 64: 9.9 against 3.1 ms on a 2-core
    Xeon): so on the CPU, with no gradient to track and not while tracing, it copies in
    blocks; elsewhere it is ``contiguous()``.
    """
    b, c, h, w = x_map.shape
    n = h * w
    if (
        x_map.device.type != 'cpu'
        or n <= BLOCK_TOKENS
        or not x_map.is_contiguous(memory_format=torch.channels_last)
        or x_map.is_contiguous()
        or (torch.is_grad_enabled() and x_map.requires_grad)
        or tracing()
    ):
        return x_map.contiguous()
    tokens = x_map.permute(0, 2, 3, 1).reshape(b, n, c)  # a view: channels-last is token-major
    out = torch.empty(b, c, n, dtype=x_map.dtype)
    for i in range(b):
        for start in range(0, n, BLOCK_TOKENS):
            out[i, :, start : start + BLOCK_TOKENS].copy_(tokens[i, start : start + BLOCK_TOKENS].t())
    return out.view(b, c, h, w)
