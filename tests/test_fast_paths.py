"""The optimised paths give the plain paths' numbers (correctness only, nothing timed)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mmpvt.layers import Mlp, PatchEmbed
from mmpvt.layers.fused import fused_kernels, is_patch_conv, linear_add, linear_gelu, strided_patch_linear
from mmpvt.models.pvt import MLP_CHUNK, PyramidVisionTransformer


def conv_tokens(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    return conv(x).flatten(2).transpose(1, 2)


@pytest.mark.parametrize(('cin', 'cout', 'k', 'hw'), [(3, 16, 4, (33, 31)), (16, 24, 2, (9, 14)), (8, 8, 8, (17, 23))])
@pytest.mark.parametrize('channels_last', [False, True])
def test_strided_patch_linear_is_the_conv(
    cin: int, cout: int, k: int, hw: tuple[int, int], channels_last: bool
) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(cin, cout, k, k)
    x = torch.randn(2, cin, *hw)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    assert is_patch_conv(conv)
    torch.testing.assert_close(strided_patch_linear(x, conv), conv_tokens(conv, x), atol=1e-5, rtol=1e-5)


def test_strided_patch_linear_gradients_match_the_conv() -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 8, 4, 4)
    x = torch.randn(1, 8, 18, 13, requires_grad=True)
    conv_tokens(conv, x).square().sum().backward()
    expected = x.grad.clone(), conv.weight.grad.clone(), conv.bias.grad.clone()
    x.grad = conv.weight.grad = conv.bias.grad = None
    strided_patch_linear(x, conv).square().sum().backward()
    for got, want in zip((x.grad, conv.weight.grad, conv.bias.grad), expected):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)


def test_overlapping_conv_is_not_a_patch_conv() -> None:
    assert not is_patch_conv(nn.Conv2d(3, 8, 7, 4, padding=3))
    assert not is_patch_conv(nn.Conv2d(8, 8, 3, 1, padding=1, groups=8))


@pytest.mark.parametrize('kernel', [4, 7])
def test_patch_embed_matches_conv_then_norm(kernel: int) -> None:
    torch.manual_seed(0)
    embed = PatchEmbed(3, 16, kernel, 4, padding=kernel // 2 if kernel == 7 else 0)
    x = torch.randn(2, 3, 37, 29)
    tokens, hw = embed(x)
    expected = embed.norm(conv_tokens(embed.proj, x))
    assert hw == (embed.output_size(37), embed.output_size(29))
    torch.testing.assert_close(tokens, expected, atol=1e-5, rtol=1e-5)


def test_fused_linear_kernels_match_the_plain_ops() -> None:
    torch.manual_seed(0)
    fc = nn.Linear(32, 64)
    x, other = torch.randn(2, 50, 32), torch.randn(2, 50, 64)
    with torch.no_grad():
        torch.testing.assert_close(linear_gelu(x, fc), F.gelu(fc(x)), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(linear_add(x, fc, other), other + fc(x), atol=1e-5, rtol=1e-5)


def test_mlp_hidden_is_fused_only_without_gradients() -> None:
    torch.manual_seed(0)
    mlp = Mlp(16, 64).eval()
    x = torch.randn(1, 12, 16)
    with torch.no_grad():
        fused = mlp(x, (3, 4))
        with fused_kernels(False):
            plain = mlp(x, (3, 4))
    torch.testing.assert_close(fused, plain, atol=1e-5, rtol=1e-5)
    assert mlp(x, (3, 4)).requires_grad  # with autograd: the plain, differentiable path


@pytest.mark.parametrize('arch', ['tiny', 'b0', 'b2_li'])
@pytest.mark.parametrize('hw', [(64, 64), (67, 93), (200, 236)])
def test_backbone_fused_and_plain_paths_agree(arch: str, hw: tuple[int, int]) -> None:
    """200×236: stage 1 has 50·59 = 2950 tokens, so v1's MLP runs in chunks (the last one ragged)."""
    if hw == (200, 236):
        assert MLP_CHUNK < (200 // 4) * (236 // 4) < 2 * MLP_CHUNK
    torch.manual_seed(0)
    model = PyramidVisionTransformer.from_arch(arch).eval()
    x = torch.randn(2, 3, *hw)
    with torch.inference_mode():
        fused = model(x)
        with fused_kernels(False):
            plain = model(x)
    explicit = PyramidVisionTransformer.from_arch(arch, fused_attn=False).eval()
    explicit.load_state_dict(model.state_dict())
    with torch.no_grad(), fused_kernels(False):
        reference = explicit(x)
    for f, p, r in zip(fused, plain, reference):
        assert f.is_contiguous()
        torch.testing.assert_close(f, p, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(f, r, atol=1e-5, rtol=1e-5)


def backbone_gradients(model: PyramidVisionTransformer, x: torch.Tensor) -> dict[str, torch.Tensor | None]:
    """Gradients of every parameter (and of the input, under ``'input'``) of a sum of the outputs' squares."""
    model.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    sum(o.square().mean() for o in model(x)).backward()
    return {'input': x.grad, **{n: p.grad for n, p in model.named_parameters()}}


def assert_same_gradients(got: dict[str, torch.Tensor | None], want: dict[str, torch.Tensor | None]) -> None:
    assert got.keys() == want.keys()
    for name, grad in want.items():
        assert grad is not None and got[name] is not None, f'no gradient reached {name}'
        torch.testing.assert_close(got[name], grad, atol=1e-6, rtol=1e-4, msg=name)


@pytest.mark.parametrize('arch', ['tiny', 'b0'])
def test_training_path_gradients_do_not_depend_on_the_fused_switch(arch: str) -> None:
    torch.manual_seed(0)
    model = PyramidVisionTransformer.from_arch(arch, drop_path_rate=0.0).train()
    x = torch.randn(1, 3, 64, 64)
    fused = backbone_gradients(model, x)
    with fused_kernels(False):
        plain = backbone_gradients(model, x)
    assert_same_gradients(fused, plain)


@pytest.mark.parametrize('arch', ['tiny', 'b0'])
def test_eval_mode_under_autograd_gives_every_parameter_and_the_input_a_gradient(arch: str) -> None:
    """Eval mode with gradients on (e.g. saliency maps, attacks): the fused inference kernels have no
    backward, so they must step aside and give the plain path's gradients."""
    torch.manual_seed(0)
    model = PyramidVisionTransformer.from_arch(arch).eval()
    x = torch.randn(1, 3, 64, 64)
    fused = backbone_gradients(model, x)
    with fused_kernels(False):
        plain = backbone_gradients(model, x)
    assert_same_gradients(fused, plain)


def test_mlp_in_eval_mode_under_autograd_gives_every_parameter_a_gradient() -> None:
    torch.manual_seed(0)
    mlp = Mlp(16, 64).eval()
    x = torch.randn(1, 12, 16, requires_grad=True)
    mlp(x, (3, 4)).square().sum().backward()
    grads = {'input': x.grad, **{n: p.grad for n, p in mlp.named_parameters()}}
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values()), [n for n, g in grads.items() if g is None]


def test_training_gradients_do_not_depend_on_activation_checkpointing() -> None:
    torch.manual_seed(0)
    model = PyramidVisionTransformer.from_arch('tiny', drop_path_rate=0.0).train()
    x = torch.randn(1, 3, 64, 64)
    plain = backbone_gradients(model, x)
    model.with_cp = True
    assert_same_gradients(backbone_gradients(model, x), plain)
