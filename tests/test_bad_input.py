"""Every bad input to the backbone gets a ValueError that says what was wrong and what is expected."""

from __future__ import annotations

import pytest
import torch

from mmpvt import PVT


@pytest.fixture(scope='module')
def tiny() -> PVT:
    torch.manual_seed(0)
    return PVT('tiny').eval()


@pytest.mark.parametrize(
    ('x', 'message'),
    [
        (torch.randn(3, 64, 64), r'4-D \(B, C, H, W\) tensor, got \(3, 64, 64\)'),
        (torch.randn(1, 1, 3, 64, 64), r'4-D .* got \(1, 1, 3, 64, 64\)'),
        (torch.randn(1, 4, 64, 64), r'expects 3 input channels, got 4'),
        (torch.randn(1, 3, 16, 64), r'16×64 pixels is too small.*at least 32'),
        (torch.randn(1, 3, 64, 20), r'64×20 pixels is too small'),
    ],
)
def test_bad_tensors(tiny: PVT, x: torch.Tensor, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        tiny(x)


def test_not_a_tensor(tiny: PVT) -> None:
    with pytest.raises(ValueError, match='got ndarray'):
        tiny(torch.randn(1, 3, 64, 64).numpy())


@pytest.mark.parametrize(
    ('kwargs', 'message'),
    [
        (dict(arch='huge'), r"unknown PVT arch 'huge'; valid archs: tiny, small, medium, large, b0"),
        (dict(arch='tiny', depths=(2, 2, 2)), r'one entry per stage, got lengths embed_dims=4, depths=3'),
        (
            dict(arch='tiny', out_indices=(0, 4)),
            r'out_indices must be distinct stage indices in \[0, 3\], got \(0, 4\)',
        ),
        (dict(arch='tiny', out_indices=()), r'out_indices must be'),
        (dict(arch='tiny', frozen_stages=5), r'frozen_stages must be in \[-1, 4\], got 5'),
        (dict(arch='tiny', frozen_stages=-2), r'frozen_stages must be in \[-1, 4\], got -2'),
        (dict(arch='tiny', num_heads=(1, 3, 5, 8)), r'stage 1: embed_dims 128 is not divisible by num_heads 3'),
    ],
)
def test_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PVT(**kwargs)
