"""The feed-forward network of a PVT block."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layout import tokens_to_map


class Mlp(nn.Module):
    """Two linears on (B, N, C) tokens, optionally with a 3×3 depth-wise conv between.

    v1: ``fc1 -> GELU -> fc2``. v2 (``dwconv=True``): ``fc1 -> dwconv -> GELU -> fc2``,
    where the depth-wise conv runs on the H×W map of the hidden tokens. PVTv2-li
    (``relu=True``) adds a ReLU after ``fc1``, as the official release does.

    Args:
        in_dims: channels C of the tokens (also the output channels).
        hidden_dims: channels of the hidden layer.
        dwconv: add the 3×3 depth-wise conv of PVTv2.
        relu: add the ReLU of PVTv2-li after ``fc1``.
        drop: dropout after the activation and after ``fc2``.
    """

    def __init__(
        self,
        in_dims: int,
        hidden_dims: int,
        *,
        dwconv: bool = False,
        relu: bool = False,
        drop: float = 0.0,
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dims, hidden_dims)
        self.relu = relu
        self.dwconv = nn.Conv2d(hidden_dims, hidden_dims, 3, padding=1, groups=hidden_dims) if dwconv else None
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dims, in_dims)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor, hw_shape: tuple[int, int]) -> torch.Tensor:
        """x: (B, N, C) tokens of an H×W map -> (B, N, C)."""
        x = self.fc1(x)  # (B, N, hidden)
        if self.relu:
            x = F.relu(x)
        if self.dwconv is not None:
            x = self.dwconv(tokens_to_map(x, hw_shape)).flatten(2).transpose(1, 2)
        return self.drop(self.fc2(self.drop(self.act(x))))
