"""The model on the paths a GPU user takes, simulated on the CPU, and the official release's numerics.

- the oneDNN kernels of ``optimize_for_cpu_inference`` step aside under autocast (mmengine's fp16
  val/test loops);
- its patch-conv GEMM runs on the CPU only (elsewhere the convolution, cuDNN on CUDA);
- ``with_cp`` checkpoints every training block, also when its input needs no gradient;
- the position embedding follows weights swapped in place (mmengine's EMAHook);
- each LayerNorm's eps is the official release's.
"""

from __future__ import annotations

import logging

import pytest
import torch
from helpers import captured_log
from mmengine.logging import MMLogger
from torch import nn

import mmpvt.models.cpu_inference as cpu_inference
import mmpvt.models.pvt as pvt_module
from mmpvt import PVT, PyramidVisionTransformer
from mmpvt.checkpoint import load_pretrained
from mmpvt.layers import PatchEmbed, SpatialReductionAttention
from mmpvt.models.cpu_inference import kernels_apply, optimize_for_cpu_inference


def test_bf16_autocast_inference_runs_and_matches_the_plain_path() -> None:
    """What mmengine's ValLoop/TestLoop with ``fp16=True`` do on a CPU: eval forward under bf16 autocast."""
    torch.manual_seed(0)
    model = PyramidVisionTransformer.from_arch('small', drop_path_rate=0.0).eval()
    optimize_for_cpu_inference(model)
    image = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        reference = model(image)
        with torch.autocast('cpu', dtype=torch.bfloat16):
            assert not kernels_apply(image, model)
            outs = model(image)
    for out, ref in zip(outs, reference, strict=True):
        assert torch.isfinite(out).all()
        diff = (out.float() - ref).abs().max()
        assert 0 < diff <= 0.1 * ref.abs().max()  # bf16 rounding: autocast did reach the linears


def test_fused_kernels_run_outside_autocast() -> None:
    """The check above is not vacuous: without autocast, eval inference does take the oneDNN path."""
    model = PyramidVisionTransformer.from_arch('tiny').eval()
    x = torch.randn(1, 16, 64)
    with torch.no_grad():
        assert kernels_apply(x, model.stages[0].blocks[0])
        with torch.autocast('cpu', dtype=torch.bfloat16):
            assert not kernels_apply(x, model.stages[0].blocks[0])


def _forbid_patch_gemm(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> torch.Tensor:
        raise AssertionError('strided_patch_linear ran on a non-CPU tensor')

    monkeypatch.setattr(cpu_inference, 'strided_patch_linear', refuse)


def test_patch_convs_stay_convolutions_off_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """On another device (here 'meta', standing in for CUDA) the patch embedding and the SR reduction
    run their Conv2d, so CUDA keeps cuDNN; shapes still come out right."""
    _forbid_patch_gemm(monkeypatch)
    embed = optimize_for_cpu_inference(PatchEmbed(3, 64, 4, 4)).to('meta')
    tokens, hw = embed(torch.empty(2, 3, 64, 96, device='meta'))
    assert tokens.shape == (2, 16 * 24, 64) and hw == (16, 24)
    sra = optimize_for_cpu_inference(SpatialReductionAttention(64, 1, 8)).to('meta')
    out = sra(torch.empty(2, 16 * 24, 64, device='meta'), (16, 24))
    assert out.shape == (2, 16 * 24, 64)


def test_patch_convs_are_gemms_on_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The counterpart: on the CPU the GEMM path is taken (so the test above can fail); likewise for SRA."""
    _forbid_patch_gemm(monkeypatch)
    with pytest.raises(AssertionError, match='strided_patch_linear ran'):
        optimize_for_cpu_inference(PatchEmbed(3, 64, 4, 4))(torch.randn(1, 3, 32, 32))
    with pytest.raises(AssertionError, match='strided_patch_linear ran'):
        optimize_for_cpu_inference(SpatialReductionAttention(64, 1, 8))(torch.randn(1, 16 * 24, 64), (16, 24))


def test_with_cp_checkpoints_stage_one_when_its_patch_embedding_is_frozen(monkeypatch: pytest.MonkeyPatch) -> None:
    """frozen_stages=0 freezes the patch embedding, so stage 1's input needs no gradient; its blocks
    (the largest activations) still train and must be checkpointed."""
    calls: list[nn.Module] = []
    real = pvt_module.checkpoint

    def recording(block: nn.Module, *args: object, **kwargs: object) -> torch.Tensor:
        calls.append(block)
        return real(block, *args, **kwargs)

    monkeypatch.setattr(pvt_module, 'checkpoint', recording)
    model = PVT('tiny', frozen_stages=0, with_cp=True).train()
    model(torch.randn(1, 3, 64, 64))
    blocks = [block for stage in model.stages for block in stage.blocks]
    assert calls == blocks
    calls.clear()
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert calls == []  # nothing to save memory for without autograd


def test_position_embedding_follows_weights_swapped_in_place() -> None:
    """EMAHook swaps weights with ``param.data.copy_``, which does not bump the parameter's version;
    a no-grad forward at a non-pretraining size must use the new embedding."""
    torch.manual_seed(0)
    model = PyramidVisionTransformer.from_arch('tiny').eval()
    other = PyramidVisionTransformer.from_arch('tiny').eval()
    image = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        model(image)  # a first forward at this size (where a cache would be filled)
        for mine, theirs in zip(model.parameters(), other.parameters(), strict=True):
            mine.data.copy_(theirs.data)
        swapped, expected = model(image), other(image)
    for a, b in zip(swapped, expected, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


#: Each LayerNorm's eps in the official release (whai362/PVT, branch v2): detection/pvt.py and
#: detection/pvt_v2.py build ``PatchEmbed.norm`` / ``OverlapPatchEmbed.norm`` and ``Attention.norm``
#: as ``nn.LayerNorm(dim)`` (torch's default eps 1e-5); ``Block.norm1``/``norm2`` and v2's stage
#: norms ``norm{1..4}`` come from ``norm_layer=partial(nn.LayerNorm, eps=1e-6)``.
OFFICIAL_EPS = {'patch_embed.norm': 1e-5, 'attn.norm': 1e-5, 'norm1': 1e-6, 'norm2': 1e-6, 'stage norm': 1e-6}
#: Which LayerNorms each variant has in the release: v1 has no stage norms; SR norms only where
#: r > 1 (stages 1–3), in every stage for linear SRA (b2-li).
OFFICIAL_NORMS = {
    'tiny': (2, 2, 2, 2),
    'small': (3, 4, 6, 3),
    'medium': (3, 4, 18, 3),
    'large': (3, 8, 27, 3),
    'b0': (2, 2, 2, 2),
    'b1': (2, 2, 2, 2),
    'b2': (3, 4, 6, 3),
    'b2_li': (3, 4, 6, 3),
    'b3': (3, 4, 18, 3),
    'b4': (3, 8, 27, 3),
    'b5': (3, 6, 40, 3),
}


def official_norms(arch: str) -> dict[str, float]:
    """The release's LayerNorms of ``arch``, named as mmpvt names them, with their eps."""
    v2, linear = arch.startswith('b'), arch == 'b2_li'
    norms: dict[str, float] = {}
    for s, depth in enumerate(OFFICIAL_NORMS[arch]):
        norms[f'stages.{s}.patch_embed.norm'] = OFFICIAL_EPS['patch_embed.norm']
        for j in range(depth):
            norms[f'stages.{s}.blocks.{j}.norm1'] = OFFICIAL_EPS['norm1']
            norms[f'stages.{s}.blocks.{j}.norm2'] = OFFICIAL_EPS['norm2']
            if linear or s < 3:  # sr_ratios (8, 4, 2, 1)
                norms[f'stages.{s}.blocks.{j}.attn.norm'] = OFFICIAL_EPS['attn.norm']
        if v2:
            norms[f'stages.{s}.norm'] = OFFICIAL_EPS['stage norm']
    return norms


@pytest.mark.parametrize('arch', list(OFFICIAL_NORMS))
def test_every_layer_norm_has_the_official_eps(arch: str) -> None:
    model = PyramidVisionTransformer.from_arch(arch, depths=(1, 1, 1, 1))
    got = {name: m.eps for name, m in model.named_modules() if isinstance(m, nn.LayerNorm)}
    expected = {k: v for k, v in official_norms(arch).items() if '.blocks.' not in k or '.blocks.0.' in k}
    assert got == expected


def test_official_norm_table_matches_the_variant_depths() -> None:
    """The table above is the release's, not a copy of ours: the depths agree with ARCH_SETTINGS."""
    from mmpvt import ARCH_SETTINGS

    assert {arch: tuple(ARCH_SETTINGS[arch]['depths']) for arch in OFFICIAL_NORMS} == OFFICIAL_NORMS


def test_embed_norm_eps_sets_mmdets_numerics() -> None:
    model = PyramidVisionTransformer.from_arch('b2_li', depths=(1, 1, 1, 1), embed_norm_eps=1e-6, norm_eps=1e-6)
    assert {m.eps for m in model.modules() if isinstance(m, nn.LayerNorm)} == {1e-6}


def test_loading_an_mmdet_checkpoint_says_how_to_match_its_numerics(tmp_path) -> None:
    """An mmdet-trained file loads unchanged, with a warning naming embed_norm_eps; none for mmdet's eps."""
    from mmdet.registry import MODELS as MMDET_MODELS

    theirs = MMDET_MODELS.build(dict(type='PyramidVisionTransformer', num_layers=[2, 2, 2, 2]))
    path = tmp_path / 'mmdet_pvt_tiny.pth'
    torch.save(theirs.state_dict(), path)
    # a logger of its own: print_log(logger='current') writes to the newest one, and earlier tests may
    # have raised the level of theirs
    logger = MMLogger.get_instance(f'mmdet_numerics_{tmp_path.name}', log_level='WARNING')
    assert MMLogger.get_current_instance() is logger
    for eps, warned in ((1e-5, True), (1e-6, False)):
        with captured_log(logging.WARNING, logger) as records:
            model = PVT('tiny', embed_norm_eps=eps)
            load_pretrained(model, path)
        notes = [r.getMessage() for r in records if 'embed_norm_eps=1e-06' in r.getMessage()]
        assert bool(notes) is warned, [r.getMessage() for r in records]
        assert model.stages[0].patch_embed.norm.eps == eps  # loading changed nothing
