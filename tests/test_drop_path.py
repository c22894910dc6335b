"""Stochastic depth: whole samples of a residual branch dropped with probability p in training, the
survivors scaled by 1/(1 - p), nothing changed in eval mode (statistics over many samples, fixed seed)."""

from __future__ import annotations

import math

import pytest
import torch

from mmpvt.layers import DropPath

SAMPLES = 20_000


@pytest.mark.parametrize('p', [0.1, 0.3, 0.5])
def test_training_drops_whole_samples_and_scales_the_survivors(p: float) -> None:
    torch.manual_seed(0)
    layer = DropPath(p).train()
    x = torch.rand(SAMPLES, 7, 5) + 0.5  # no zero anywhere: a zero in the output means "dropped"
    out = layer(x)
    assert out.shape == x.shape
    dropped = (out == 0).flatten(1)
    # a sample is dropped whole or kept whole
    assert torch.equal(dropped.all(dim=1), dropped.any(dim=1))
    kept = ~dropped.all(dim=1)
    torch.testing.assert_close(out[kept], x[kept] / (1 - p), rtol=1e-6, atol=0)
    # the dropped fraction is p within 5 standard deviations of a binomial proportion
    sigma = math.sqrt(p * (1 - p) / SAMPLES)
    assert abs((~kept).float().mean().item() - p) < 5 * sigma
    # so the expectation is unchanged
    assert abs((out.sum() / x.sum()).item() - 1) < 5 * sigma / (1 - p)


def test_each_call_draws_a_new_mask() -> None:
    torch.manual_seed(0)
    layer = DropPath(0.5).train()
    x = torch.ones(1000, 4)
    assert not torch.equal(layer(x), layer(x))


def test_gradient_flows_only_through_the_kept_samples() -> None:
    torch.manual_seed(0)
    layer = DropPath(0.3).train()
    x = torch.rand(2000, 6, requires_grad=True)
    out = layer(x)
    out.sum().backward()
    kept = out.detach()[:, 0] != 0
    torch.testing.assert_close(x.grad[kept], torch.full_like(x.grad[kept], 1 / 0.7))
    assert torch.equal(x.grad[~kept], torch.zeros_like(x.grad[~kept]))


@pytest.mark.parametrize('p', [0.0, 0.5])
def test_eval_mode_is_the_identity(p: float) -> None:
    layer = DropPath(p).eval()
    x = torch.randn(SAMPLES, 3)
    assert torch.equal(layer(x), x)


def test_zero_probability_is_the_identity_in_training() -> None:
    x = torch.randn(100, 3)
    assert torch.equal(DropPath(0.0).train()(x), x)


def test_probability_outside_zero_one_is_refused() -> None:
    for p in (-0.1, 1.0):
        with pytest.raises(ValueError, match=r'drop_prob must be in \[0, 1\)'):
            DropPath(p)
