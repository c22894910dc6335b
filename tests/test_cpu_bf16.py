"""The bf16 CPU inference path of ``optimize_for_cpu_inference(model, dtype=...)`` and the hardware choice.

Correctness only, nothing timed: bf16 outputs stay within a bound of fp32's, the fp32 path and the
parameters are untouched, the bf16 weight copies follow the parameters, and the choice of precision
follows the CPU's flags at its edges.
"""

from __future__ import annotations

import copy
import functools
import logging
import os
import pickle
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from mmpvt.models.cpu_features import (
    MIN_GEMM_SPEEDUP,
    PrecisionChoice,
    amx_blocked,
    choose_cpu_dtype,
    cpu_flags,
    has_amx,
    onednn_isa_cap,
    requested_cpu_dtype,
)
from mmpvt.models.cpu_inference import (
    CastBlock,
    CastConv2d,
    CastLinear,
    CpuAutocastEntry,
    CpuPrecisionEntry,
    TokenChunkedBlock,
    _to_float32,
    autocast_inference,
    cpu_precision,
    optimize_for_cpu_inference,
    refresh_cast_weights,
)
from mmpvt.models.pvt import PyramidVisionTransformer

#: max |bf16 - fp32| / max |fp32| over all maps of these randomly initialised models (the issue's target).
#: bf16 keeps 8 bits of mantissa (2^-9 = 2e-3 per rounding); with the residual stream in fp32 these
#: small models measure 4-6e-3, about half of ``torch.autocast('cpu', torch.bfloat16)`` of the plain
#: model (compared below); a bf16 stream measured 1.5e-2 on PVT-S at 800×1333.
BF16_BOUND = 1e-2


def rel_error(outs: tuple[torch.Tensor, ...], refs: tuple[torch.Tensor, ...]) -> float:
    diff = max((o.float() - r).abs().max().item() for o, r in zip(outs, refs, strict=True))
    return diff / max(r.abs().max().item() for r in refs)


def pvt(arch: str, **kwargs) -> PyramidVisionTransformer:
    torch.manual_seed(0)
    return PyramidVisionTransformer.from_arch(arch, depths=(1, 1, 1, 1), **kwargs).eval()


# ----------------------------------------------------------------------------- the hardware choice
AMX = {'avx512f', 'avx512_bf16', 'amx_bf16', 'amx_tile'}


def test_amx_picks_bf16_without_measuring() -> None:
    choice = choose_cpu_dtype('auto', flags=AMX, measure=pytest.fail, blocked=lambda: None)
    assert choice.dtype == torch.bfloat16 and 'AMX' in choice.reason


@pytest.mark.parametrize(
    ('speedup', 'expected'),
    [(0.01, torch.float32), (MIN_GEMM_SPEEDUP - 0.01, torch.float32), (MIN_GEMM_SPEEDUP, torch.bfloat16)],
)
def test_amx_that_onednn_cannot_use_is_measured(speedup: float, expected: torch.dtype) -> None:
    """AMX in the flags but oneDNN capped below it: bf16 ran 0.2× fp32 at AVX512_CORE on the Xeon."""
    calls = []
    why = 'ONEDNN_MAX_CPU_ISA=AVX512_CORE keeps oneDNN from it'
    choice = choose_cpu_dtype('auto', flags=AMX, measure=lambda: calls.append(1) or speedup, blocked=lambda: why)
    assert calls == [1]
    assert choice.dtype == expected
    assert f'the CPU has AMX but {why}: a bf16 GEMM measured {speedup:.2f}× fp32' in choice.reason


@pytest.mark.parametrize(
    ('environ', 'blocked_by'),
    [
        ({}, None),
        ({'ONEDNN_MAX_CPU_ISA': '  '}, None),  # empty: no cap
        ({'ONEDNN_MAX_CPU_ISA': 'ALL'}, None),
        ({'ONEDNN_MAX_CPU_ISA': 'default'}, None),  # oneDNN takes the names in any case
        ({'ONEDNN_MAX_CPU_ISA': 'avx512_core_amx'}, None),
        ({'ONEDNN_MAX_CPU_ISA': 'AVX10_1_512_AMX_FP16'}, None),
        ({'ONEDNN_MAX_CPU_ISA': 'AVX512_CORE_BF16'}, 'ONEDNN_MAX_CPU_ISA=AVX512_CORE_BF16'),  # a Zen 4's set
        ({'ONEDNN_MAX_CPU_ISA': 'AVX10_2_512'}, 'ONEDNN_MAX_CPU_ISA=AVX10_2_512'),  # measured 0.59×: no AMX
        ({'DNNL_MAX_CPU_ISA': 'avx2'}, 'DNNL_MAX_CPU_ISA=avx2'),
        ({'ONEDNN_MAX_CPU_ISA': 'ALL', 'DNNL_MAX_CPU_ISA': 'AVX2'}, None),  # ONEDNN_ is read first
        ({'ONEDNN_MAX_CPU_ISA': '', 'DNNL_MAX_CPU_ISA': 'AVX2'}, 'DNNL_MAX_CPU_ISA=AVX2'),
    ],
)
def test_onednn_isa_caps_below_amx_block_it(environ: dict[str, str], blocked_by: str | None) -> None:
    why = amx_blocked(environ, granted=lambda: True)
    if blocked_by is None:
        assert why is None
    else:
        assert why == f'{blocked_by} keeps oneDNN from it'
        assert onednn_isa_cap(environ) == tuple(blocked_by.split('='))


def test_amx_refused_by_the_os_blocks_it() -> None:
    assert amx_blocked({}, granted=lambda: False) == 'the OS refused this process its tile registers'


def test_a_capped_process_really_chooses_fp32() -> None:
    """Real flags, real oneDNN, real measurement: capped at AVX512_CORE, no CPU makes bf16 pay.

    On the Xeon with AMX, bf16 GEMMs then ran at 0.2× fp32's rate; a CPU without AMX measures
    or has no bf16 instructions, and fp32 is chosen either way.
    """
    code = 'from mmpvt.models.cpu_features import choose_cpu_dtype; print(choose_cpu_dtype())'
    env = {**os.environ, 'ONEDNN_MAX_CPU_ISA': 'AVX512_CORE'}
    env.pop('DNNL_MAX_CPU_ISA', None)
    out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.startswith('float32 (')
    if has_amx():
        assert 'the CPU has AMX but ONEDNN_MAX_CPU_ISA=AVX512_CORE keeps oneDNN from it' in out


def test_no_bf16_instruction_picks_fp32_without_measuring() -> None:
    choice = choose_cpu_dtype('auto', flags={'avx2', 'fma'}, measure=pytest.fail)
    assert choice.dtype == torch.float32 and 'no bf16 matrix unit' in choice.reason


@pytest.mark.parametrize(
    ('speedup', 'expected'),
    [(1.1, torch.float32), (MIN_GEMM_SPEEDUP - 0.01, torch.float32), (MIN_GEMM_SPEEDUP, torch.bfloat16)],
)
def test_bf16_vectors_without_amx_are_measured(speedup: float, expected: torch.dtype) -> None:
    """Zen 4: AVX512-BF16 but no AMX (bf16 GEMM 1.1× fp32 there); half of AMX's flags is no AMX."""
    calls = []
    flags = {'avx512f', 'avx512_bf16', 'amx_tile'}
    choice = choose_cpu_dtype('auto', flags=flags, measure=lambda: calls.append(1) or speedup, blocked=pytest.fail)
    assert calls == [1]
    assert choice.dtype == expected
    assert f'{speedup:.2f}×' in choice.reason and 'avx512_bf16' in choice.reason


@pytest.mark.parametrize('requested', ['fp32', 'float32', torch.float32])
def test_requested_fp32_is_honoured_without_looking_at_the_cpu(requested: str | torch.dtype) -> None:
    choice = choose_cpu_dtype(requested, flags=AMX, measure=pytest.fail, blocked=pytest.fail)
    assert choice == PrecisionChoice(torch.float32, 'as requested')


@pytest.mark.parametrize('requested', ['bf16', 'bfloat16', torch.bfloat16])
def test_requested_bf16_with_usable_amx_is_not_measured(requested: str | torch.dtype) -> None:
    choice = choose_cpu_dtype(requested, flags=AMX, measure=pytest.fail, blocked=lambda: None)
    assert choice.dtype == torch.bfloat16 and not choice.slower
    assert choice.reason == 'as requested; the CPU has AMX (amx_bf16, amx_tile): bf16 matrix products'


@pytest.mark.parametrize(
    ('flags', 'premise'),
    [
        ({'avx2', 'fma'}, 'the CPU has no bf16 matrix unit (no amx_bf16) nor bf16 instructions, so oneDNN emulates'),
        ({'avx512f', 'avx512_bf16'}, 'no AMX, avx512_bf16 only'),
        (AMX, 'the CPU has AMX but ONEDNN_MAX_CPU_ISA=AVX2 keeps oneDNN from it'),
    ],
)
@pytest.mark.parametrize(
    ('speedup', 'slower'), [(0.02, True), (MIN_GEMM_SPEEDUP - 0.01, True), (MIN_GEMM_SPEEDUP, False)]
)
def test_requested_bf16_without_usable_amx_is_honoured_and_says_what_it_costs(
    flags: set[str], premise: str, speedup: float, slower: bool
) -> None:
    """bf16 by name is honoured everywhere, but where it is slower than fp32 the choice says so, to be
    logged as a warning: on the Zen 1 EPYC (AVX2 only) a 512³ bf16 GEMM measured 0.02× fp32."""
    calls = []
    why = 'ONEDNN_MAX_CPU_ISA=AVX2 keeps oneDNN from it'
    choice = choose_cpu_dtype('bf16', flags=flags, measure=lambda: calls.append(1) or speedup, blocked=lambda: why)
    assert calls == [1]
    assert choice.dtype == torch.bfloat16 and choice.slower is slower
    assert choice.reason.startswith('as requested')
    assert premise in choice.reason and f'a bf16 GEMM measured {speedup:.2f}× fp32' in choice.reason
    assert ('expect it slower than fp32 (auto would choose fp32)' in choice.reason) is slower


@pytest.mark.parametrize(('speedup', 'level'), [(MIN_GEMM_SPEEDUP - 0.01, logging.WARNING), (MIN_GEMM_SPEEDUP, None)])
def test_optimize_warns_where_requested_bf16_is_slower(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, speedup: float, level: int | None
) -> None:
    """``optimize_for_cpu_inference(model, torch.bfloat16)`` on a CPU without AMX (simulated: AVX2 only)."""
    no_amx = functools.partial(choose_cpu_dtype, flags={'avx2'}, measure=lambda: speedup)
    monkeypatch.setattr('mmpvt.models.cpu_inference.choose_cpu_dtype', no_amx)
    with caplog.at_level(logging.INFO, logger='mmpvt.models.cpu_inference'):
        model = optimize_for_cpu_inference(pvt('tiny'), torch.bfloat16)
    assert model.cpu_dtype == torch.bfloat16  # honoured either way
    records = [r for r in caplog.records if r.name == 'mmpvt.models.cpu_inference']
    if level is None:
        assert records == []  # asked for and it pays: nothing to say
    else:
        assert [r.levelno for r in records] == [level]
        assert 'runs in bfloat16 (as requested, though the CPU has no bf16 matrix unit' in records[0].getMessage()
        assert 'expect it slower than fp32' in records[0].getMessage()


@pytest.mark.parametrize(
    ('requested', 'expected'),
    [('auto', None), ('bf16', torch.bfloat16), (torch.bfloat16, torch.bfloat16), ('fp32', torch.float32)],
)
def test_a_requested_name_is_read_without_the_cpu(requested: str | torch.dtype, expected: torch.dtype | None) -> None:
    assert requested_cpu_dtype(requested) == expected


@pytest.mark.parametrize('bad', ['float16', torch.float16, 'fast', 'Auto', torch.float64])
def test_an_unknown_dtype_is_refused(bad: str | torch.dtype) -> None:
    with pytest.raises(ValueError, match=r'float32|bfloat16'):
        choose_cpu_dtype(bad)
    with pytest.raises(ValueError, match=r'float32|bfloat16'):
        requested_cpu_dtype(bad)


def test_flags_are_read_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / 'cpuinfo'
    cpuinfo.write_text('processor\t: 0\nmodel name\t: Some Xeon\nflags\t\t: fpu avx512f amx_bf16 amx_tile\n\n')
    assert cpu_flags(str(cpuinfo)) == {'fpu', 'avx512f', 'amx_bf16', 'amx_tile'}
    assert has_amx(cpu_flags(str(cpuinfo)))
    assert cpu_flags(str(tmp_path / 'missing')) == frozenset()  # not Linux: no flags, so fp32


# ----------------------------------------------------------------------------- outputs
@pytest.mark.parametrize('arch', ['tiny', 'b0', 'b2_li'])
@pytest.mark.parametrize('hw', [(64, 64), (67, 93), (392, 400)])
def test_bf16_outputs_are_within_the_bound_of_fp32(arch: str, hw: tuple[int, int]) -> None:
    """392×400: stage 1 has 98·100 = 9800 tokens, more than one bf16 chunk of the v1 MLP (the last one ragged)."""
    assert TokenChunkedBlock.chunk_tokens_bf16 < 98 * 100 < 2 * TokenChunkedBlock.chunk_tokens_bf16
    model = pvt(arch)
    fast = optimize_for_cpu_inference(copy.deepcopy(model), torch.bfloat16)
    x = torch.randn(2, 3, *hw)
    with torch.inference_mode():
        reference = model(x)
        outs = fast(x)
        with torch.autocast('cpu', torch.bfloat16):
            autocast = model(x)
    for out, ref in zip(outs, reference, strict=True):
        assert out.dtype == torch.float32 and out.is_contiguous() and out.shape == ref.shape
    assert rel_error(outs, reference) <= BF16_BOUND
    assert rel_error(outs, reference) <= 0.75 * rel_error(autocast, reference)


class OpNames(TorchDispatchMode):
    """The names of the aten/mkldnn ops run inside, with the dtype of their first tensor argument; a depth-wise
    conv's name says so."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[tuple[str, torch.dtype | None]] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        first = next((a for a in args if isinstance(a, torch.Tensor)), None)
        name = str(func.overloadpacket)
        if name in ('aten.conv2d', 'aten.convolution') and args[1].shape[1] == 1 < args[1].shape[0]:
            name = 'depth-wise conv'  # one input channel per group: v2's MLP conv (patch embeddings take C > 1)
        self.seen.add((name, None if first is None else first.dtype))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize('onednn_bf16', [True, False])
@pytest.mark.parametrize('arch', ['tiny', 'b0'])
def test_without_onednn_bf16_kernels_the_bf16_path_runs_torchs_ops(
    monkeypatch: pytest.MonkeyPatch, arch: str, onednn_bf16: bool
) -> None:
    """oneDNN's bf16 kernels need AVX512-BW or AVX-NE-CONVERT: on the Zen 1 EPYC (AVX2 only) its fused bf16
    linear raised. There (simulated by ``False``) the bf16 path computes unfused in bf16, within the bound."""
    if onednn_bf16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("this CPU's oneDNN has no bf16 kernels")
    monkeypatch.setattr('mmpvt.models.cpu_inference._MKLDNN_BF16', onednn_bf16)
    model = pvt(arch)
    fast = optimize_for_cpu_inference(copy.deepcopy(model), torch.bfloat16)
    x = torch.randn(1, 3, 67, 93)
    with torch.inference_mode():
        reference = model(x)
        with OpNames() as ops:
            outs = fast(x)
    in_bf16 = {name for name, dtype in ops.seen if dtype == torch.bfloat16}
    assert any(name.startswith('mkldnn.') for name in in_bf16) is onednn_bf16
    if not onednn_bf16:  # the products, unfused, in bf16
        assert {'aten.linear', 'aten.addmm', 'aten.mm'} & in_bf16
        assert arch != 'b0' or 'depth-wise conv' in in_bf16  # v2's MLP conv, unfused
    assert rel_error(outs, reference) <= BF16_BOUND


@pytest.mark.parametrize('arch', ['tiny', 'b0'])
def test_a_bf16_block_in_chunks_equals_it_whole(arch: str) -> None:
    """Chunks of 9 tokens (9800 = 1088·9 + 8: the last one ragged) against one chunk of all 9800."""
    model = optimize_for_cpu_inference(pvt(arch), torch.bfloat16)
    block = model.stages[0].blocks[0]
    assert block.chunk_tokens_mixed < 98 * 100 < 2 * block.chunk_tokens_mixed
    x = torch.randn(1, 98 * 100, block.norm1.normalized_shape[0])
    with torch.inference_mode():
        block.chunk_tokens_mixed = 98 * 100
        whole = block(x, (98, 100))
        block.chunk_tokens_mixed = 9
        parts = block(x, (98, 100))
    assert whole.dtype == parts.dtype == torch.float32
    torch.testing.assert_close(parts, whole, atol=1e-5, rtol=1e-5)


def test_a_hook_on_the_attention_runs_the_plain_block() -> None:
    """The chunked path never calls the attention module: with a hook on it the block steps aside."""
    model = optimize_for_cpu_inference(pvt('tiny'), torch.bfloat16)
    block = model.stages[0].blocks[0]
    calls = []
    block.attn.register_forward_hook(lambda _m, _inp, out: calls.append(out.shape))
    x = torch.randn(1, 16 * 16, block.norm1.normalized_shape[0])
    with torch.inference_mode():
        out = block(x, (16, 16))
    assert calls == [(1, 256, block.norm1.normalized_shape[0])]
    assert out.shape == x.shape


@pytest.mark.parametrize('arch', ['tiny', 'b0'])
def test_the_bf16_path_computes_in_bf16_on_an_fp32_residual_stream(arch: str) -> None:
    """The products run in bf16; the tokens between them (what each block adds to) stay fp32."""
    model = optimize_for_cpu_inference(pvt(arch), torch.bfloat16)
    seen = {}
    block = model.stages[1].blocks[0]
    assert isinstance(block, CastBlock)
    block.attn.q.register_forward_hook(lambda _m, inp, out: seen.update(q=out.dtype))
    block.mlp.fc2.register_forward_hook(lambda _m, inp, out: seen.update(fc2=(inp[0].dtype, out.dtype)))
    block.register_forward_hook(lambda _m, inp, out: seen.update(block=(inp[0].dtype, out.dtype)))
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert seen == {
        'q': torch.bfloat16,
        'fc2': (torch.bfloat16, torch.bfloat16),
        'block': (torch.float32, torch.float32),
    }


def test_inside_autocast_the_maps_come_in_autocast_dtype() -> None:
    model = optimize_for_cpu_inference(pvt('tiny'), torch.bfloat16)
    with torch.no_grad(), torch.autocast('cpu', torch.bfloat16):
        outs = model(torch.randn(1, 3, 64, 64))
    assert all(out.dtype == torch.bfloat16 for out in outs)


def test_parameters_keys_and_the_fp32_path_are_untouched() -> None:
    """Autograd and tracing run the fp32 fast paths bit for bit; so does inference after switching back to fp32."""
    model = pvt('tiny')
    params = dict(model.named_parameters())
    keys = list(model.state_dict())
    x = torch.randn(1, 3, 67, 93)
    fp32_model = optimize_for_cpu_inference(copy.deepcopy(model))
    with torch.no_grad():
        fp32_fast = fp32_model(x)
    with torch.enable_grad():
        plain_grad = fp32_model(x)  # the patch GEMMs run under autograd too
    optimize_for_cpu_inference(model, torch.bfloat16)
    assert isinstance(model, CpuPrecisionEntry) and isinstance(model, PyramidVisionTransformer)
    assert isinstance(model.stages[0].blocks[0].attn.q, CastLinear)
    assert dict(model.named_parameters()) == params and list(model.state_dict()) == keys
    assert all(p.dtype == torch.float32 for p in model.parameters())
    with torch.enable_grad():
        for a, b in zip(model(x), plain_grad, strict=True):
            assert torch.equal(a, b)
    with torch.no_grad():
        traced = torch.jit.trace(model, x, check_trace=False)
        for a, b in zip(traced(x), fp32_fast, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    optimize_for_cpu_inference(model, torch.float32)
    assert model.cpu_dtype == torch.float32
    with torch.no_grad():
        for a, b in zip(model(x), fp32_fast, strict=True):
            assert torch.equal(a, b)


def test_a_bf16_model_pickles_and_copies() -> None:
    """``torch.save`` of the whole module (weights_only=False) and ``copy.deepcopy`` (EMAHook) keep the bf16 path."""
    model = optimize_for_cpu_inference(pvt('tiny'), torch.bfloat16)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected_maps = model(x)
        for clone in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
            assert isinstance(clone, CpuPrecisionEntry) and type(clone) is type(model)
            for a, b in zip(clone(x), expected_maps, strict=True):
                assert torch.equal(a, b)


def test_v2_convs_are_cast_and_the_rest_of_a_model_is_not() -> None:
    model = nn.ModuleDict(dict(backbone=pvt('b0'), neck=nn.Conv2d(32, 8, 1)))
    optimize_for_cpu_inference(model, 'bfloat16')
    assert type(model['neck']) is nn.Conv2d
    assert isinstance(model['backbone'].stages[0].blocks[0].mlp.dwconv, CastConv2d)
    assert cpu_precision(model).dtype == torch.bfloat16
    with torch.no_grad():
        maps = model['backbone'](torch.randn(1, 3, 64, 64))
        assert model['neck'](maps[0]).dtype == torch.float32  # the fp32 neck takes the fp32 maps


# ----------------------------------------------------------------------------- the weight copies
def bf16_linear() -> CastLinear:
    torch.manual_seed(0)
    linear = nn.Linear(16, 8).eval()
    linear.__class__ = CastLinear
    linear.compute_dtype = torch.bfloat16
    return linear


def expected(linear: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return nn.functional.linear(x.bfloat16(), linear.weight.bfloat16(), linear.bias.bfloat16()).float()


def test_the_weight_copies_follow_in_place_changes_and_loads() -> None:
    linear = bf16_linear()
    x = torch.randn(4, 16)
    with torch.inference_mode():  # copies made in inference mode serve later no-grad calls too
        first = linear(x)
    with torch.no_grad():
        torch.testing.assert_close(first.float(), expected(linear, x), atol=2e-2, rtol=2e-2)
        linear.weight.mul_(-1)  # what an optimizer step does: in place, the version counter moves
        torch.testing.assert_close(linear(x).float(), expected(linear, x), atol=2e-2, rtol=2e-2)
        linear.load_state_dict({'weight': torch.ones(8, 16), 'bias': torch.zeros(8)})
        assert torch.equal(linear(x).float(), expected(linear, x))
        linear.weight = nn.Parameter(torch.full((8, 16), 2.0))  # a new tensor: a new data pointer
        assert torch.equal(linear(x).float(), expected(linear, x))


def test_writes_through_data_need_a_refresh() -> None:
    """mmengine's EMAHook swaps weights with ``param.data.copy_``, which no version counter sees."""
    linear = bf16_linear()
    x = torch.randn(4, 16)
    with torch.no_grad():
        before = linear(x)
        linear.weight.data.copy_(torch.ones(8, 16))
        assert torch.equal(linear(x), before)  # stale: the documented limit of the cache
        refresh_cast_weights(linear)
        assert torch.equal(linear(x).float(), expected(linear, x))


class NestedHead(nn.Module):
    """A head whose result nests its maps in a tuple, a list and a dict beside a non-tensor."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple:
        y = self.conv(x)
        return y, [y * 2], {'y': y, 'n': 3}


def test_autocast_inference_computes_in_bf16_and_hands_on_fp32() -> None:
    torch.manual_seed(0)
    head = NestedHead().eval()
    plain = copy.deepcopy(head)
    assert autocast_inference(head) is head and isinstance(head, CpuAutocastEntry)
    seen = []
    head.conv.register_forward_hook(lambda _m, inp, out: seen.append((inp[0].dtype, out.dtype)))
    x = torch.randn(2, 4, 5, 6)
    with torch.no_grad():
        (y, [y2], named), (ref, _, _) = head(x), plain(x)
    assert seen == [(torch.float32, torch.bfloat16)]  # autocast casts inside the op: fp32 in, a bf16 product out
    assert y.dtype == y2.dtype == named['y'].dtype == torch.float32 and named['n'] == 3
    torch.testing.assert_close(y, ref, atol=3e-2, rtol=3e-2)
    head.train()
    with torch.no_grad():
        head(x)  # training mode: the plain fp32 forward
    head.eval()
    head(x)  # under autograd: the same
    autocast_inference(head, None)  # switched off
    with torch.no_grad():
        head(x)
    assert seen[1:] == [(torch.float32, torch.float32)] * 3


def test_an_autocast_head_pickles_with_its_setting() -> None:
    head = autocast_inference(NestedHead().eval())
    loaded = pickle.loads(pickle.dumps(head))
    assert isinstance(loaded, CpuAutocastEntry) and isinstance(loaded, NestedHead)
    assert loaded.cpu_autocast_dtype == torch.bfloat16
    with torch.no_grad():
        assert loaded(torch.randn(1, 4, 2, 2))[0].dtype == torch.float32
    assert type(copy.deepcopy(head)) is type(head)


def test_casting_results_to_fp32_rebuilds_only_the_containers_holding_bf16() -> None:
    """What autocast heads hand on and fp32 islands receive: bf16 tensors become fp32, nothing else changes."""
    bf16, fp32 = torch.ones(2, dtype=torch.bfloat16), torch.ones(2)
    untouched = (fp32, [fp32, 3], {'k': fp32})
    assert _to_float32(untouched, torch.bfloat16) is untouched

    class Meta(dict):  # as mmengine's ConfigDict: a dict subclass keeps its class
        pass

    pair = namedtuple('Pair', 'x y')
    out = _to_float32([pair(bf16, fp32), Meta(k=bf16, name='text'), untouched], torch.bfloat16)
    assert type(out[0]) is pair and out[0].x.dtype == torch.float32 and out[0].y is fp32
    assert type(out[1]) is Meta and out[1]['k'].dtype == torch.float32 and out[1]['name'] == 'text'
    assert out[2] is untouched
