"""Spatial Reduction Attention (SRA), the attention layer of PVT.

Queries come from every token of an H×W map; keys and values come from a
reduced map, so the attention matrix is N × N/r² instead of N × N
(Wang et al., "Pyramid Vision Transformer", ICCV 2021, Sec. 3.3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .layout import tokens_to_map
from .pooling import adaptive_avg_pool2d_matmul
from .tracing import tracing


class SpatialReductionAttention(nn.Module):
    """Multi-head attention whose keys and values come from a spatially reduced map.

    With ``sr_ratio=r > 1`` the map is reduced by a Conv2d with kernel = stride = r
    followed by LayerNorm. When H or W is not a multiple of r the convolution floors:
    the last ``H % r`` rows and ``W % r`` columns contribute no keys or values (they
    still act as queries), exactly as in the official PVT and mmdet. ``sr_ratio=1``
    is plain global attention. With ``linear=True`` (PVTv2-li) the map is instead
    average-pooled to ``pool_size``×``pool_size``, then a 1×1 conv, LayerNorm and
    GELU; attention cost then grows linearly with N.

    Args:
        embed_dims: channels C of the tokens.
        num_heads: attention heads; must divide ``embed_dims``.
        sr_ratio: spatial reduction ratio r of keys and values.
        qkv_bias: add a bias to the query and key/value projections.
        attn_drop: dropout on the attention weights.
        proj_drop: dropout after the output projection.
        linear: use linear SRA (pooling) instead of the strided conv.
        pool_size: output size of the pooling in linear SRA.
        fused_attn: compute attention with ``F.scaled_dot_product_attention`` (timm's
            name); False runs the explicit ``softmax(q @ kᵀ · scale) @ v`` path (same
            numbers to fp32 rounding). Unrelated to the CPU kernels of
            :func:`mmpvt.optimize_for_cpu_inference`.
        norm_eps: epsilon of the LayerNorm after the reduction; the official release
            uses torch's default 1e-5 here (mmdet uses 1e-6).
    """

    def __init__(
        self,
        embed_dims: int,
        num_heads: int,
        sr_ratio: int = 1,
        *,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        linear: bool = False,
        pool_size: int = 7,
        fused_attn: bool = True,
        norm_eps: float = 1e-5,
    ) -> None:
        super().__init__()
        if embed_dims % num_heads != 0:
            raise ValueError(f'embed_dims ({embed_dims}) must be divisible by num_heads ({num_heads})')
        if sr_ratio < 1:
            raise ValueError(f'sr_ratio must be >= 1, got {sr_ratio}')
        self.embed_dims = embed_dims
        self.num_heads = num_heads
        self.sr_ratio = sr_ratio
        self.linear = linear
        self.pool_size = pool_size
        self.fused_attn = fused_attn
        self.scale = (embed_dims // num_heads) ** -0.5

        self.q = nn.Linear(embed_dims, embed_dims, bias=qkv_bias)
        self.kv = nn.Linear(embed_dims, 2 * embed_dims, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.proj_drop = nn.Dropout(proj_drop)

        self.sr: nn.Module | None = None
        self.norm: nn.Module | None = None
        if linear:
            self.sr = nn.Conv2d(embed_dims, embed_dims, kernel_size=1)
            self.norm = nn.LayerNorm(embed_dims, eps=norm_eps)
        elif sr_ratio > 1:
            self.sr = nn.Conv2d(embed_dims, embed_dims, kernel_size=sr_ratio, stride=sr_ratio)
            self.norm = nn.LayerNorm(embed_dims, eps=norm_eps)

    def reduced_shape(self, hw_shape: tuple[int, int]) -> tuple[int, int]:
        """Size of the key/value map for a query map of ``hw_shape``."""
        if self.linear:
            return self.pool_size, self.pool_size
        h, w = hw_shape
        return h // self.sr_ratio, w // self.sr_ratio

    def reduced_tokens(self, x: torch.Tensor, hw_shape: tuple[int, int]) -> torch.Tensor:
        """The tokens keys and values are computed from.

        Args:
            x: (B, N, C) tokens of an H×W map.
            hw_shape: (H, W) of the map.

        Returns:
            (B, M, C) tokens of the reduced map (see :meth:`reduced_shape`); ``x`` itself
            when there is no reduction.
        """
        if self.sr is None:
            return x
        x_map = tokens_to_map(x, hw_shape)  # channels-last view, no copy
        if self.linear:
            pool = adaptive_avg_pool2d_matmul if tracing() else F.adaptive_avg_pool2d  # ONNX has no dynamic one
            x_map = pool(x_map, self.pool_size)
            return F.gelu(self.norm(self.sr(x_map).flatten(2).transpose(1, 2)))
        return self.norm(self.sr(x_map).flatten(2).transpose(1, 2))

    def attention_weights(
        self, x: torch.Tensor, hw_shape: tuple[int, int], queries: slice = slice(None)
    ) -> torch.Tensor:
        """The attention probabilities ``softmax(q @ kᵀ · scale)``, without dropout.

        Args:
            x: (B, N, C) tokens of an H×W map.
            hw_shape: (H, W) of the map.
            queries: the tokens whose rows are wanted (all by default); only their
                queries are computed, so one row of a large map costs one row.

        Returns:
            (B, heads, Nq, M) weights of the Nq chosen queries over the M = N/r² keys of
            the reduced map; each row sums to 1.
        """
        q, k, _v = self._heads(x, hw_shape, queries)
        return self._weights(q, k)

    def forward(self, x: torch.Tensor, hw_shape: tuple[int, int]) -> torch.Tensor:
        """Attend from every token of the map to the reduced map.

        Args:
            x: (B, N, C) tokens of an H×W map, N = H·W, row-major.
            hw_shape: (H, W) of the map.

        Returns:
            (B, N, C) attended tokens (no residual added).
        """
        self._check_tokens(x, hw_shape)
        return self.attend(x, *self.keys_values(x, hw_shape))

    def keys_values(self, x: torch.Tensor, hw_shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys and values, each (B, heads, M, C/heads), of the reduced map of ``x``, (B, N, C) tokens of an H×W map."""
        b, _n, c = x.shape
        kv = self.kv(self.reduced_tokens(x, hw_shape))
        k, v = kv.reshape(b, -1, 2, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        return k, v

    def attend(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The attended tokens of the queries of ``x``: (B, Nq, C) tokens, any subset of the map -> (B, Nq, C).

        ``k`` and ``v`` come from :meth:`keys_values` of the whole map; each query attends
        on its own. :meth:`project` follows.
        """
        return self.project(self.attend_heads(x, k, v))

    def attend_heads(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """:meth:`attend` without the output projection: (B, Nq, C) tokens -> (B, Nq, C), the heads side by side."""
        b, nq, c = x.shape
        q = self._queries(x)
        drop = self.attn_drop if self.training else 0.0
        if self.fused_attn:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        else:
            out = F.dropout(self._weights(q, k), p=drop) @ v
        return out.transpose(1, 2).reshape(b, nq, c)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """The output projection (and its dropout) of :meth:`attend_heads`'s tokens; token-wise, so any subset."""
        return self.proj_drop(self.proj(x))

    def _queries(self, x: torch.Tensor) -> torch.Tensor:
        """(B, Nq, C) tokens -> queries (B, heads, Nq, C/heads)."""
        b, _n, c = x.shape
        return self.q(x).reshape(b, -1, self.num_heads, c // self.num_heads).transpose(1, 2)

    def _check_tokens(self, x: torch.Tensor, hw_shape: tuple[int, int]) -> None:
        if x.shape[1] != hw_shape[0] * hw_shape[1]:
            raise ValueError(
                f'x has {x.shape[1]} tokens but hw_shape {tuple(hw_shape)} holds {hw_shape[0] * hw_shape[1]}'
            )

    def _heads(
        self, x: torch.Tensor, hw_shape: tuple[int, int], queries: slice = slice(None)
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Queries (B, heads, Nq, C/heads) of the ``queries`` tokens; keys, values (B, heads, M, C/heads) of ``x``."""
        self._check_tokens(x, hw_shape)
        return (self._queries(x[:, queries]), *self.keys_values(x, hw_shape))

    def _weights(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """(B, heads, N, M) softmax of the scaled query-key products."""
        return ((q * self.scale) @ k.transpose(-2, -1)).softmax(dim=-1)


def sra_macs(
    hw_shape: tuple[int, int],
    embed_dims: int,
    sr_ratio: int,
    *,
    num_heads: int = 1,
    include_av: bool = True,
    linear: bool = False,
    pool_size: int = 7,
) -> int:
    """Multiply-adds of the attention matrix products of one SRA layer.

    Counts only the two products that make attention quadratic: Q·Kᵀ, which is
    N·M·d summed over heads = N·M·C, and (with ``include_av``) A·V, the same again,
    where N = H·W queries and M = ⌊H/r⌋·⌊W/r⌋ keys (or ``pool_size``² for linear SRA).
    The splitting into heads does not change the total, so ``num_heads`` only has
    to divide ``embed_dims``. Projections, the reduction conv and softmax are not
    counted.

    Example (the paper's 56×56 stage-1 map, C = 64): Q·Kᵀ costs
    3136·3136·64 = 629,407,744 at r = 1 and 3136·49·64 = 9,834,496 at r = 8,
    r² = 64 times fewer (not "9.8e8" nor "100×").
    """
    if embed_dims % num_heads != 0:
        raise ValueError(f'embed_dims ({embed_dims}) must be divisible by num_heads ({num_heads})')
    h, w = hw_shape
    n = h * w
    m = pool_size * pool_size if linear else (h // sr_ratio) * (w // sr_ratio)
    qk = n * m * embed_dims
    return 2 * qk if include_av else qk
