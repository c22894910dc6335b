"""Patch embedding: the strided conv that starts each PVT stage."""

from __future__ import annotations

import torch
from torch import nn


class PatchEmbed(nn.Module):
    """Conv2d then LayerNorm, turning a (B, C_in, H, W) map into (B, N, C) tokens.

    PVT v1 uses non-overlapping patches (kernel = stride, no padding); PVTv2 uses
    overlapping ones (kernel 7 stride 4, then kernel 3 stride 2, padding kernel // 2).
    Sizes that do not divide evenly are floored, as a Conv2d does.

    Args:
        in_channels: channels of the input map.
        embed_dims: channels C of the output tokens.
        kernel_size: conv kernel.
        stride: conv stride (the stage's downsampling factor).
        padding: conv zero padding.
        norm_eps: epsilon of the LayerNorm; the official release uses torch's default
            1e-5 here (mmdet uses 1e-6).
    """

    def __init__(
        self,
        in_channels: int,
        embed_dims: int,
        kernel_size: int,
        stride: int,
        padding: int = 0,
        *,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.proj = nn.Conv2d(in_channels, embed_dims, kernel_size, stride, padding)
        self.norm = nn.LayerNorm(embed_dims, eps=norm_eps)

    def output_size(self, size: int) -> int:
        """Length of one side of the output map for an input side of ``size``."""
        return (size + 2 * self.padding - self.kernel_size) // self.stride + 1

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """x: (B, C_in, H_in, W_in) -> tokens (B, N, C) of an (H, W) map, and (H, W).

        Either memory layout of ``x`` works.
        """
        hw_shape = (self.output_size(x.shape[2]), self.output_size(x.shape[3]))
        return self.norm(self.proj(x).flatten(2).transpose(1, 2)), hw_shape
