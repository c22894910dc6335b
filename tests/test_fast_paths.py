"""The CPU fast paths of ``optimize_for_cpu_inference`` give the plain paths' numbers and step aside
where they do not apply (correctness only, nothing timed)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import mmpvt.models.cpu_inference as cpu_inference
from mmpvt.analysis import count_macs
from mmpvt.layers import Mlp, PatchEmbed
from mmpvt.models.cpu_inference import (
    DwConvGeluMlp,
    GeluFusedMlp,
    PatchGemmConv2d,
    TokenChunkedBlock,
    is_patch_conv,
    linear_gelu,
    optimize_for_cpu_inference,
    strided_patch_linear,
)
from mmpvt.models.pvt import PVTBlock, PyramidVisionTransformer


def conv_tokens(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    return conv(x).flatten(2).transpose(1, 2)


def optimized(module: nn.Module) -> nn.Module:
    """An optimised copy; ``module`` itself stays plain."""
    return optimize_for_cpu_inference(copy.deepcopy(module))


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
    plain = PatchEmbed(3, 16, kernel, 4, padding=kernel // 2 if kernel == 7 else 0)
    embed = optimized(plain)
    assert isinstance(embed.proj, PatchGemmConv2d) == (kernel == 4)  # overlapping patches stay a conv
    x = torch.randn(2, 3, 37, 29)
    tokens, hw = embed(x)
    expected = plain.norm(conv_tokens(plain.proj, x))
    assert hw == (embed.output_size(37), embed.output_size(29))
    torch.testing.assert_close(tokens, expected, atol=1e-5, rtol=1e-5)


def test_linear_gelu_matches_the_plain_ops() -> None:
    torch.manual_seed(0)
    fc = nn.Linear(32, 64)
    x = torch.randn(2, 50, 32)
    with torch.no_grad():
        torch.testing.assert_close(linear_gelu(x, fc), F.gelu(fc(x)), atol=1e-5, rtol=1e-5)


def test_mlp_hidden_is_fused_only_without_gradients() -> None:
    torch.manual_seed(0)
    plain = Mlp(16, 64).eval()
    mlp = optimized(plain)
    assert isinstance(mlp, GeluFusedMlp)
    x = torch.randn(1, 12, 16)
    with torch.no_grad():
        fused = mlp(x, (3, 4))
        reference = plain(x, (3, 4))
    torch.testing.assert_close(fused, reference, atol=1e-5, rtol=1e-5)
    assert mlp(x, (3, 4)).requires_grad  # with autograd: the plain, differentiable path


@pytest.mark.parametrize('arch', ['tiny', 'b0', 'b2_li'])
@pytest.mark.parametrize('hw', [(64, 64), (67, 93), (200, 236)])
def test_backbone_fused_and_plain_paths_agree(arch: str, hw: tuple[int, int]) -> None:
    """200×236: stage 1 has 50·59 = 2950 tokens, so v1's MLP runs in chunks (the last one ragged)."""
    if hw == (200, 236):
        assert TokenChunkedBlock.chunk_tokens < (200 // 4) * (236 // 4) < 2 * TokenChunkedBlock.chunk_tokens
    torch.manual_seed(0)
    model = PyramidVisionTransformer.from_arch(arch, depths=(1, 1, 1, 1)).eval()
    fast = optimized(model)
    x = torch.randn(2, 3, *hw)
    with torch.inference_mode():
        fused = fast(x)
        plain = model(x)
    explicit = PyramidVisionTransformer.from_arch(arch, depths=(1, 1, 1, 1), fused_attn=False).eval()
    explicit.load_state_dict(model.state_dict())
    with torch.no_grad():
        reference = explicit(x)
    for f, p, r in zip(fused, plain, reference, strict=True):
        assert f.is_contiguous()
        torch.testing.assert_close(f, p, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(f, r, atol=1e-5, rtol=1e-5)


def test_the_step_is_idempotent_and_keeps_parameters_keys_and_hooks() -> None:
    torch.manual_seed(0)
    model = PyramidVisionTransformer.from_arch('tiny', depths=(1, 1, 1, 1)).eval()
    params = dict(model.named_parameters())
    keys = list(model.state_dict())
    calls = []
    model.stages[0].blocks[0].mlp.fc1.register_forward_hook(lambda *_: calls.append('fc1'))
    assert optimize_for_cpu_inference(model) is model
    classes = [type(m) for m in model.modules()]
    optimize_for_cpu_inference(model)
    assert [type(m) for m in model.modules()] == classes
    assert PatchGemmConv2d in classes and GeluFusedMlp in classes and TokenChunkedBlock in classes
    assert dict(model.named_parameters()) == params  # the same Parameter objects: optimisers keep working
    assert list(model.state_dict()) == keys
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert calls == ['fc1']


def test_a_hooked_fc1_sees_what_it_sees_in_the_plain_model() -> None:
    """The fused kernel would skip ``fc1`` and ``act``: with a hook on either, the MLP runs its plain path."""
    torch.manual_seed(0)
    plain = Mlp(16, 64).eval()
    mlp = optimized(plain)
    seen = {}
    plain.fc1.register_forward_hook(lambda _m, _i, out: seen.__setitem__('plain', out))
    mlp.fc1.register_forward_hook(lambda _m, _i, out: seen.__setitem__('fast', out))
    with torch.no_grad():
        mlp(torch.randn(1, 12, 16), (3, 4))
        plain(torch.randn(1, 12, 16), (3, 4))
    assert 'fast' in seen and seen['fast'].min() < -0.2  # fc1's own output, not GELU's (>= -0.17)


def test_only_plain_gelu_mlps_are_fused() -> None:
    """A reparametrised ``fc1`` or another activation is left alone (the kernel would ignore both)."""
    tanh = Mlp(16, 64)
    tanh.act = nn.GELU(approximate='tanh')
    normed = Mlp(16, 64)
    torch.nn.utils.parametrizations.weight_norm(normed.fc1)
    for mlp in (tanh, normed):
        assert type(optimize_for_cpu_inference(mlp)) is Mlp


def test_the_optimised_model_traces_with_torch_jit() -> None:
    """torch.jit.trace (the tracer of mmdeploy's ONNX export) records the plain ops, not the oneDNN kernel."""
    torch.manual_seed(0)
    plain = PyramidVisionTransformer.from_arch('tiny', depths=(1, 1, 1, 1)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        traced = torch.jit.trace(optimized(plain), x)
        for ours, theirs in zip(traced(x), plain(x), strict=True):
            torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_the_patch_gemm_refuses_a_map_smaller_than_its_patch_as_the_conv_does() -> None:
    conv = nn.Conv2d(8, 8, 4, stride=4)
    fast = copy.deepcopy(conv)
    fast.__class__ = PatchGemmConv2d  # what the step does to an SR reduction (a standalone SRA's too)
    with pytest.raises(RuntimeError, match='Kernel size'):
        conv(torch.randn(1, 8, 3, 9))
    with pytest.raises(RuntimeError, match='Kernel size'):
        fast(torch.randn(1, 8, 3, 9))


def test_only_pvt_layers_change_in_a_larger_model() -> None:
    """A whole model (here a backbone beside a 1×1 stride-1 conv, formally a patch conv): only the PVT changes."""
    model = nn.ModuleDict(
        dict(backbone=PyramidVisionTransformer.from_arch('tiny', depths=(1, 1, 1, 1)), neck=nn.Conv2d(64, 32, 1))
    )
    optimize_for_cpu_inference(model)
    assert type(model['neck']) is nn.Conv2d
    assert isinstance(model['backbone'].stages[0].patch_embed.proj, PatchGemmConv2d)
    assert isinstance(model['backbone'].stages[0].blocks[0].attn.sr, PatchGemmConv2d)


def test_pvt_v2_keeps_its_overlapping_embeddings_and_fuses_its_dwconv_mlps() -> None:
    model = optimize_for_cpu_inference(PyramidVisionTransformer.from_arch('b2_li', depths=(1, 1, 1, 1)))
    for stage in model.stages:
        assert type(stage.patch_embed.proj) is nn.Conv2d
        block = stage.blocks[0]
        assert type(block) is PVTBlock and type(block.mlp) is DwConvGeluMlp
        assert type(block.mlp.fc1) is nn.Linear and type(block.mlp.dwconv) is nn.Conv2d
        assert type(block.attn.sr) is nn.Conv2d  # linear SRA: a 1×1 conv after pooling


@pytest.mark.parametrize('relu', [False, True])
@pytest.mark.parametrize('batch', [1, 2])
def test_the_dwconv_gelu_mlp_matches_the_plain_ops(relu: bool, batch: int) -> None:
    """v2 (and v2-li, ReLU after fc1): the fused conv+GELU gives the plain output; autograd runs the plain ops."""
    torch.manual_seed(0)
    plain = Mlp(16, 64, dwconv=True, relu=relu).eval()
    mlp = optimized(plain)
    assert isinstance(mlp, DwConvGeluMlp)
    x = torch.randn(batch, 7 * 9, 16)
    with torch.no_grad():
        torch.testing.assert_close(mlp(x, (7, 9)), plain(x, (7, 9)), atol=1e-5, rtol=1e-5)
    out = mlp(x, (7, 9))
    assert out.requires_grad
    torch.testing.assert_close(out, plain(x, (7, 9)), atol=0, rtol=0)


def test_a_hooked_dwconv_sees_what_it_sees_in_the_plain_model() -> None:
    """The fused kernel would skip ``dwconv`` and ``act``: with a hook on either, the MLP runs its plain path."""
    torch.manual_seed(0)
    mlp = optimized(Mlp(16, 64, dwconv=True).eval())
    seen = {}
    mlp.dwconv.register_forward_hook(lambda _m, _i, out: seen.__setitem__('dwconv', out))
    with torch.no_grad():
        mlp(torch.randn(1, 12, 16) * 10, (3, 4))
    assert seen['dwconv'].min() < -0.2  # the conv's own output, not GELU's (>= -0.17)


def test_only_plain_dwconv_gelu_mlps_are_fused() -> None:
    """Another activation, or a depth-wise conv other than 3×3 with padding 1, is left alone."""
    tanh = Mlp(16, 64, dwconv=True)
    tanh.act = nn.GELU(approximate='tanh')
    five = Mlp(16, 64, dwconv=True)
    five.dwconv = nn.Conv2d(64, 64, 5, padding=2, groups=64)
    dense = Mlp(16, 64, dwconv=True)
    dense.dwconv = nn.Conv2d(64, 64, 3, padding=1, groups=1)
    for mlp in (tanh, five, dense):
        assert type(optimize_for_cpu_inference(mlp)) is Mlp


def test_forward_hooks_count_the_same_on_the_optimised_model() -> None:
    model = PyramidVisionTransformer.from_arch('tiny', depths=(1, 1, 1, 1)).eval()
    x = torch.randn(1, 3, 96, 64)
    plain = count_macs(model, lambda m: m(x))
    fast = count_macs(optimized(model), lambda m: m(x))
    assert fast.by_module == plain.by_module and fast.total == plain.total > 0


def v1_block(drop: float = 0.0) -> PVTBlock:
    """A v1 block (token-wise MLP) for 3000 tokens of a 50×60 map: more than one chunk."""
    return PVTBlock(16, 1, 4, 1, drop=drop)


X_3000, HW_3000 = torch.randn(1, 3000, 16), (50, 60)


def _forbid_inference_kernels(monkeypatch: pytest.MonkeyPatch, block: nn.Module) -> list[str]:
    """Make the oneDNN kernel raise; returns a list that records each call of the MLP's ``fc2`` (one per chunk)."""

    def refuse(*args: object) -> torch.Tensor:
        raise AssertionError('linear_gelu ran')

    monkeypatch.setattr(cpu_inference, 'linear_gelu', refuse)
    calls: list[str] = []
    block.mlp.fc2.register_forward_hook(lambda *_: calls.append('fc2'))
    return calls


def test_the_mlp_half_runs_in_chunks_in_inference() -> None:
    torch.manual_seed(0)
    plain = v1_block().eval()
    block = optimized(plain)
    assert isinstance(block, TokenChunkedBlock)
    calls: list[str] = []
    block.mlp.fc2.register_forward_hook(lambda *_: calls.append('fc2'))
    with torch.no_grad():
        torch.testing.assert_close(block(X_3000, HW_3000), plain(X_3000, HW_3000), atol=1e-5, rtol=1e-5)
    assert calls == ['fc2', 'fc2']  # 2048 + 952 tokens


def test_inference_kernels_step_aside_off_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    block = optimized(v1_block()).eval()
    calls = _forbid_inference_kernels(monkeypatch, block)
    with torch.no_grad():
        with pytest.raises(AssertionError, match='linear_gelu ran'):  # on the CPU: the kernel
            block(X_3000, HW_3000)
        calls.clear()
        assert block.to('meta')(X_3000.to('meta'), HW_3000).shape == (1, 3000, 16)
        assert calls == ['fc2']  # whole, not in chunks


def test_inference_kernels_step_aside_under_autocast(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    plain = v1_block().eval()
    block = optimized(plain)
    calls = _forbid_inference_kernels(monkeypatch, block)
    with torch.no_grad(), torch.autocast('cpu', dtype=torch.bfloat16):
        torch.testing.assert_close(block(X_3000, HW_3000), plain(X_3000, HW_3000), atol=0, rtol=0)
    assert calls == ['fc2']


def test_inference_kernels_step_aside_under_autograd(monkeypatch: pytest.MonkeyPatch) -> None:
    block = optimized(v1_block()).eval()
    calls = _forbid_inference_kernels(monkeypatch, block)
    assert block(X_3000, HW_3000).requires_grad
    assert calls == ['fc2']


def test_training_mode_takes_the_plain_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dropout on: the oneDNN kernel has no dropout."""
    torch.manual_seed(0)
    plain = v1_block(drop=0.5).train()
    block = optimized(plain)
    calls = _forbid_inference_kernels(monkeypatch, block)
    with torch.no_grad():
        torch.manual_seed(1)
        expected = plain(X_3000, HW_3000)
        torch.manual_seed(1)
        torch.testing.assert_close(block(X_3000, HW_3000), expected, atol=0, rtol=0)
    assert calls == ['fc2']


def test_export_traces_the_plain_ops() -> None:
    """torch.export of the optimised model holds convolutions and no oneDNN kernel (ONNX has none)."""
    model = optimized(PyramidVisionTransformer.from_arch('tiny', depths=(1, 1, 1, 1)).eval())
    with torch.no_grad():
        graph = str(torch.export.export(model, (torch.randn(1, 3, 64, 64),)).graph)
    assert 'mkldnn' not in graph
    assert graph.count('aten.conv2d') == 7  # four patch embeddings, three SR reductions


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
def test_training_path_gradients_do_not_depend_on_the_optimisation(arch: str) -> None:
    torch.manual_seed(0)
    model = PyramidVisionTransformer.from_arch(arch, depths=(1, 1, 1, 1), drop_path_rate=0.0).train()
    x = torch.randn(1, 3, 64, 64)
    fused = backbone_gradients(optimized(model), x)
    plain = backbone_gradients(model, x)
    assert_same_gradients(fused, plain)


@pytest.mark.parametrize('arch', ['tiny', 'b0'])
def test_eval_mode_under_autograd_gives_every_parameter_and_the_input_a_gradient(arch: str) -> None:
    """Eval mode with gradients on (e.g. saliency maps, attacks): the oneDNN inference kernels have no
    backward, so they must step aside and give the plain path's gradients."""
    torch.manual_seed(0)
    model = PyramidVisionTransformer.from_arch(arch, depths=(1, 1, 1, 1)).eval()
    x = torch.randn(1, 3, 64, 64)
    fused = backbone_gradients(optimized(model), x)
    plain = backbone_gradients(model, x)
    assert_same_gradients(fused, plain)


def test_mlp_in_eval_mode_under_autograd_gives_every_parameter_a_gradient() -> None:
    torch.manual_seed(0)
    mlp = optimized(Mlp(16, 64)).eval()
    x = torch.randn(1, 12, 16, requires_grad=True)
    mlp(x, (3, 4)).square().sum().backward()
    grads = {'input': x.grad, **{n: p.grad for n, p in mlp.named_parameters()}}
    assert all(g is not None and g.abs().sum() > 0 for g in grads.values()), [n for n, g in grads.items() if g is None]


def test_training_gradients_do_not_depend_on_activation_checkpointing() -> None:
    torch.manual_seed(0)
    model = PyramidVisionTransformer.from_arch('tiny', depths=(1, 1, 1, 1), drop_path_rate=0.0).train()
    x = torch.randn(1, 3, 64, 64)
    plain = backbone_gradients(model, x)
    model.with_cp = True
    assert_same_gradients(backbone_gradients(model, x), plain)
