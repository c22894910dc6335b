"""The SRA layer: fused and explicit paths agree, border handling, cost formula."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmpvt.layers import SpatialReductionAttention, sra_macs


def reference_sra(layer: SpatialReductionAttention, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """SRA written out from the paper's equations, head by head."""
    b, _n, c = x.shape
    heads, d = layer.num_heads, c // layer.num_heads
    x_kv = x
    if layer.sr is not None:
        x_map = x.transpose(1, 2).reshape(b, c, *hw)
        x_kv = layer.norm(layer.sr(x_map).flatten(2).transpose(1, 2))
    q = layer.q(x)
    k, v = layer.kv(x_kv).split(c, dim=-1)
    outs = []
    for h in range(heads):
        sl = slice(h * d, (h + 1) * d)
        a = torch.softmax(q[..., sl] @ k[..., sl].transpose(1, 2) / d**0.5, dim=-1)
        outs.append(a @ v[..., sl])
    return layer.proj(torch.cat(outs, dim=-1))


@pytest.mark.parametrize('sr_ratio', [1, 2, 4, 8])
@pytest.mark.parametrize('hw', [(16, 16), (17, 23), (9, 30)])
def test_fused_and_explicit_paths_agree(sr_ratio: int, hw: tuple[int, int]) -> None:
    torch.manual_seed(0)
    layer = SpatialReductionAttention(64, 4, sr_ratio).eval()
    x = torch.randn(2, hw[0] * hw[1], 64)
    fused = layer(x, hw)
    layer.fused_attn = False
    explicit = layer(x, hw)
    assert fused.shape == x.shape
    torch.testing.assert_close(fused, explicit, atol=1e-5, rtol=0)
    torch.testing.assert_close(explicit, reference_sra(layer, x, hw), atol=1e-5, rtol=0)


def test_border_rows_and_columns_are_queries_but_not_keys() -> None:
    """With H, W not multiples of r, the conv floors: the last H % r rows give no keys."""
    torch.manual_seed(0)
    layer = SpatialReductionAttention(32, 2, sr_ratio=4).eval()
    hw = (10, 7)  # keys from the top-left 8×4 block only
    assert layer.reduced_shape(hw) == (2, 1)
    x = torch.randn(1, 70, 32)
    out = layer(x, hw)
    changed = x.clone().reshape(1, 10, 7, 32)
    changed[:, 8:, :, :] += 5.0  # border rows
    changed[:, :, 4:, :] += 5.0  # border columns
    changed = changed.reshape(1, 70, 32)
    out_changed = layer(changed, hw)
    inner = torch.zeros(10, 7, dtype=torch.bool)
    inner[:8, :4] = True
    inner = inner.flatten()
    # Queries of untouched tokens see the same keys and values: unchanged output.
    torch.testing.assert_close(out_changed[:, inner], out[:, inner], atol=1e-6, rtol=0)
    # The border tokens themselves are still queries: their outputs move.
    assert not torch.allclose(out_changed[:, ~inner], out[:, ~inner])


def test_linear_sra_pools_to_a_fixed_grid() -> None:
    torch.manual_seed(0)
    layer = SpatialReductionAttention(32, 2, sr_ratio=8, linear=True).eval()
    for hw in [(14, 14), (40, 61)]:
        assert layer.reduced_shape(hw) == (7, 7)
        x = torch.randn(1, hw[0] * hw[1], 32)
        fused = layer(x, hw)
        layer.fused_attn = False
        torch.testing.assert_close(fused, layer(x, hw), atol=1e-5, rtol=0)
        layer.fused_attn = True
        b, _n, c = x.shape
        pooled = F.adaptive_avg_pool2d(x.transpose(1, 2).reshape(b, c, *hw), 7)
        kv_in = F.gelu(layer.norm(layer.sr(pooled).flatten(2).transpose(1, 2)))
        torch.testing.assert_close(layer.reduced_tokens(x, hw), kv_in, atol=1e-6, rtol=0)  # pooled channels-last


@pytest.mark.parametrize(('sr_ratio', 'linear'), [(1, False), (4, False), (8, True)])
def test_attention_weights_are_what_the_layer_attends_with(sr_ratio: int, linear: bool) -> None:
    """(B, heads, N, M) probabilities: rows sum to 1, and weights @ V through ``proj`` is the layer's output."""
    torch.manual_seed(0)
    layer = SpatialReductionAttention(32, 2, sr_ratio, linear=linear).eval()
    hw = (12, 9)
    x = torch.randn(2, hw[0] * hw[1], 32)
    weights = layer.attention_weights(x, hw)
    kv_h, kv_w = layer.reduced_shape(hw)
    assert weights.shape == (2, 2, hw[0] * hw[1], kv_h * kv_w)
    torch.testing.assert_close(weights.sum(dim=-1), torch.ones(2, 2, hw[0] * hw[1]))
    v = layer.kv(layer.reduced_tokens(x, hw))[..., 32:].reshape(2, -1, 2, 16).transpose(1, 2)  # (B, heads, M, C/heads)
    heads = (weights @ v).transpose(1, 2).reshape(2, -1, 32)
    torch.testing.assert_close(layer.proj(heads), layer(x, hw), atol=1e-5, rtol=1e-5)
    # the rows of chosen queries alone are those rows of the whole matrix
    torch.testing.assert_close(layer.attention_weights(x, hw, slice(5, 7)), weights[:, :, 5:7])


@pytest.mark.parametrize('fused_attn', [True, False])
def test_attention_dropout_only_in_training(fused_attn: bool) -> None:
    """In eval mode the layer is the dropout-free attention of the paper's equations; in training it is not."""
    torch.manual_seed(0)
    layer = SpatialReductionAttention(32, 2, 2, attn_drop=0.5, fused_attn=fused_attn)
    x = torch.randn(1, 64, 32)
    layer.eval()
    torch.testing.assert_close(layer(x, (8, 8)), reference_sra(layer, x, (8, 8)), atol=1e-5, rtol=0)
    layer.train()
    assert not torch.allclose(layer(x, (8, 8)), layer(x, (8, 8)))
    assert not torch.allclose(layer(x, (8, 8)), reference_sra(layer, x, (8, 8)))


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match='divisible by num_heads'):
        SpatialReductionAttention(64, 3)
    with pytest.raises(ValueError, match='sr_ratio must be >= 1'):
        SpatialReductionAttention(64, 1, 0)
    layer = SpatialReductionAttention(64, 1, 2)
    with pytest.raises(ValueError, match='hw_shape'):
        layer(torch.randn(1, 10, 64), (4, 4))


def test_sra_cost_of_the_paper_example() -> None:
    """56×56 map, C = 64: Q·Kᵀ is r² = 64 times cheaper at r = 8 (not "100×")."""
    qk_r8 = sra_macs((56, 56), 64, 8, include_av=False)
    qk_r1 = sra_macs((56, 56), 64, 1, include_av=False)
    assert qk_r8 == 3136 * 49 * 64 == 9_834_496
    assert qk_r1 == 3136 * 3136 * 64 == 629_407_744
    assert qk_r1 // qk_r8 == 64
    assert sra_macs((56, 56), 64, 8) == 2 * 9_834_496
    assert sra_macs((56, 56), 64, 8, num_heads=1) == sra_macs((56, 56), 64, 8, num_heads=4)
    assert sra_macs((56, 56), 64, 8, linear=True, include_av=False) == 3136 * 49 * 64
    assert sra_macs((112, 112), 64, 8, linear=True, include_av=False) == 12544 * 49 * 64
