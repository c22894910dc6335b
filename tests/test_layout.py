"""The layout helpers of ``mmpvt.layers.layout``: the maps PVT's convs get and the NCHW maps it hands on."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mmpvt.layers.layout import BLOCK_TOKENS, nchw_contiguous, tokens_to_map


@pytest.mark.parametrize('batch', [1, 2])
def test_a_depth_wise_conv_keeps_the_token_map_channels_last(batch: int) -> None:
    """With B = 1, ``transpose(1, 2).reshape`` gives a batch stride torch's convs take for NCHW."""
    x = torch.randn(batch, 6 * 5, 16)
    conv = nn.Conv2d(16, 16, 3, padding=1, groups=16)
    x_map = tokens_to_map(x, (6, 5))
    assert x_map.data_ptr() == x.data_ptr()  # a view
    torch.testing.assert_close(x_map, x.transpose(1, 2).reshape(batch, 16, 6, 5), atol=0, rtol=0)
    with torch.no_grad():
        out = conv(x_map)
        assert out.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(out, conv(x_map.contiguous()), atol=1e-6, rtol=0)
    if batch == 1:  # the layout this replaces
        with torch.no_grad():
            assert not conv(x.transpose(1, 2).reshape(batch, 16, 6, 5)).is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize('tokens', [BLOCK_TOKENS, BLOCK_TOKENS + 1, 3 * BLOCK_TOKENS - 5])
@pytest.mark.parametrize('batch', [1, 2])
def test_nchw_contiguous_copies_exactly(tokens: int, batch: int) -> None:
    """At BLOCK_TOKENS tokens the plain copy, above it blocks (the last one ragged); values equal either way."""
    x = torch.randn(batch, tokens, 8)
    x_map = tokens_to_map(x, (1, tokens))
    with torch.no_grad():
        out = nchw_contiguous(x_map)
    assert out.is_contiguous() and out.shape == (batch, 8, 1, tokens)
    assert torch.equal(out, x_map.contiguous())


def test_nchw_contiguous_keeps_the_gradient() -> None:
    x = torch.randn(1, 2 * BLOCK_TOKENS, 4, requires_grad=True)
    out = nchw_contiguous(tokens_to_map(x, (2, BLOCK_TOKENS)))
    assert out.is_contiguous() and out.requires_grad
    out.sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
