"""Parity with the reference: mmdet's PVT / PVTv2 and, for b2-li, the paper's equations.

Every model here has every parameter randomised in place (LayerNorm scales included), is in
eval mode and runs in fp32; outputs must agree at every stage to 1e-5 (max abs difference).
mmdet uses LayerNorm eps 1e-6 everywhere, the official release (and mmpvt by default) 1e-5 after
the patch embedding and the SR reduction, so the mmdet comparisons build with ``embed_norm_eps=1e-6``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import (
    MMDET_ARCHS,
    RETINANET,
    fresh_pvt,
    load_cli,
    mmdet_numerics_pvt,
    randomize_,
    stage_diffs,
    to_official,
)
from mmdet.models.backbones.pvt import pvt_convert
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.config import ConfigDict
from mmengine.registry import DefaultScope
from mmengine.runner import load_checkpoint

from mmpvt.checkpoint import load_pretrained

TOL = 1e-5
V1_SIZES = [(224, 224), (512, 640)]
V2_SIZES = [(224, 224), (200, 328)]  # 200×328: maps of 50×82, 25×41, 13×21, 7×11 (uneven SR windows)
CASES = [(a, s) for a in ('tiny', 'small') for s in V1_SIZES] + [(a, s) for a in ('b0', 'b2') for s in V2_SIZES]
#: The official-layout path: both v1 variants, and v2 on the smaller b0.
OFFICIAL_CASES = [case for case in CASES if case[0] != 'b2']


def build_mmdet(arch: str, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return MMDET_MODELS.build(dict(MMDET_ARCHS[arch], drop_path_rate=0.0, **kwargs))


@pytest.fixture(scope='module')
def from_mmdet(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[torch.nn.Module, torch.nn.Module]]:
    """arch -> (mmpvt PVT loaded from the file of a random mmdet PVT, that mmdet PVT); cached per arch."""
    cache: dict[str, tuple[torch.nn.Module, torch.nn.Module]] = {}

    def get(arch: str) -> tuple[torch.nn.Module, torch.nn.Module]:
        if arch not in cache:
            theirs = randomize_(build_mmdet(arch)).eval()
            path = tmp_path_factory.mktemp('mmdet') / f'mmdet_pvt_{arch}.pth'
            torch.save({'meta': {'epoch': 12}, 'state_dict': theirs.state_dict()}, path)
            ours = mmdet_numerics_pvt(arch)
            assert load_pretrained(ours, path) == ([], [])
            cache[arch] = ours, theirs
        return cache[arch]

    return get


@pytest.fixture(scope='module')
def from_official(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[torch.nn.Module, torch.nn.Module]]:
    """arch -> (mmpvt PVT, mmdet PVT), both loaded by ``init_cfg`` from one official-layout file."""
    cache: dict[str, tuple[torch.nn.Module, torch.nn.Module]] = {}

    def get(arch: str) -> tuple[torch.nn.Module, torch.nn.Module]:
        if arch not in cache:
            official = to_official(randomize_(fresh_pvt(arch), seed=7).state_dict())
            path = tmp_path_factory.mktemp('official') / f'pvt_{arch}.pth'
            torch.save(official, path)
            init_cfg = ConfigDict(type='Pretrained', checkpoint=str(path))
            theirs = build_mmdet(arch, init_cfg=init_cfg)
            theirs.init_weights()  # mmdet's own pvt_convert
            expected = pvt_convert(official)
            for key, value in theirs.state_dict().items():  # mmdet loads non-strictly: check it loaded all
                assert torch.equal(value, expected[key]), key
            ours = mmdet_numerics_pvt(arch, init_cfg=dict(init_cfg))
            ours.init_weights()
            cache[arch] = ours, theirs.eval()
        return cache[arch]

    return get


@pytest.mark.parametrize(('arch', 'image_hw'), CASES)
def test_mmdet_checkpoint_gives_mmdets_outputs(from_mmdet, arch: str, image_hw: tuple[int, int]) -> None:
    diffs = stage_diffs(*from_mmdet(arch), image_hw)
    print(f'mmdet -> mmpvt {arch} {image_hw}: max abs diff per stage {diffs}')
    assert max(diffs) < TOL


@pytest.mark.parametrize('arch', ['tiny', 'b0'])
def test_mmdet_conversion_is_exact_in_float64(from_mmdet, arch: str) -> None:
    """In float64 the models agree to float64 rounding: the fp32 gaps above are rounding, not mapping.

    (A small image: mmdet's 1×1-conv FFN is slow in float64 on CPU.)
    """
    ours, theirs = (copy.deepcopy(model).double() for model in from_mmdet(arch))
    image = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        diffs = [(o - r).abs().max().item() for o, r in zip(ours(image), theirs(image), strict=True)]
    print(f'float64 mmdet -> mmpvt {arch} (64, 64): max abs diff per stage {diffs}')
    assert max(diffs) < 1e-12


@pytest.mark.parametrize(('arch', 'image_hw'), OFFICIAL_CASES)
def test_official_checkpoint_gives_mmdets_outputs(from_official, arch: str, image_hw: tuple[int, int]) -> None:
    diffs = stage_diffs(*from_official(arch), image_hw)
    print(f'official -> mmpvt vs mmdet {arch} {image_hw}: max abs diff per stage {diffs}')
    assert max(diffs) < TOL


def test_mmdets_own_initialisation_gives_mmdets_outputs(tmp_path: Path) -> None:
    """PVT-T as mmdet's ``init_weights()`` leaves it (no rescaling): outputs then reach about 10, so the
    bound is relative: max |ours - mmdet| <= 1e-5 · max |mmdet| at every stage (measured: under 2e-6)."""
    theirs = build_mmdet('tiny')
    before = {k: v.clone() for k, v in theirs.state_dict().items()}
    theirs.init_weights()
    state = theirs.eval().state_dict()
    assert not torch.equal(state['layers.0.1.0.pos_embed'], before['layers.0.1.0.pos_embed'])  # it did initialise
    path = tmp_path / 'mmdet_pvt_tiny_init.pth'
    torch.save(state, path)
    ours = mmdet_numerics_pvt('tiny')
    assert load_pretrained(ours, path) == ([], [])
    image = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        outs, refs = ours(image), theirs(image)
    scales = [r.abs().max().item() for r in refs]
    diffs = [(o - r).abs().max().item() for o, r in zip(outs, refs, strict=True)]
    print(f'mmdet init -> mmpvt tiny (224, 224): max |mmdet| {scales}, max abs diff {diffs}')
    assert all(scale > 0.1 for scale in scales)
    for stage, (diff, scale) in enumerate(zip(diffs, scales)):
        assert diff <= TOL * scale, f'stage {stage}: {diff} > {TOL} × {scale}'


# --- PVTv2-b2-li: mmdet has no linear SRA, so the reference is the paper's equations ------------


def layer_norm(x: torch.Tensor, sd: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    """The release's LayerNorms: torch's default eps 1e-5 after the patch embedding and in the
    SR reduction (``patch_embed{s}.norm``, ``attn.norm``), 1e-6 in the blocks and stage norms."""
    eps = 1e-5 if name.startswith('patch_embed') or name.endswith('attn.norm') else 1e-6
    return F.layer_norm(x, x.shape[-1:], sd[f'{name}.weight'], sd[f'{name}.bias'], eps=eps)


def linear(x: torch.Tensor, sd: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    return x @ sd[f'{name}.weight'].T + sd[f'{name}.bias']


def linear_sra(x: torch.Tensor, hw: tuple[int, int], sd: dict[str, torch.Tensor], p: str, heads: int) -> torch.Tensor:
    """Linear SRA (PVTv2, Sec. 3.1): keys and values from AvgPool_7(X) -> 1×1 conv -> LN -> GELU."""
    b, n, c = x.shape
    d = c // heads
    pooled = F.adaptive_avg_pool2d(x.transpose(1, 2).reshape(b, c, *hw), 7)
    reduced = F.conv2d(pooled, sd[f'{p}sr.weight'], sd[f'{p}sr.bias']).flatten(2).transpose(1, 2)
    kv = linear(F.gelu(layer_norm(reduced, sd, f'{p}norm')), sd, f'{p}kv')  # (B, 49, 2C): keys then values
    q = linear(x, sd, f'{p}q').reshape(b, n, heads, d).transpose(1, 2)
    k, v = kv.reshape(b, 49, 2, heads, d).permute(2, 0, 3, 1, 4)
    attn = torch.softmax(q @ k.transpose(-2, -1) / d**0.5, dim=-1)  # softmax(QKᵀ/√d)
    return linear((attn @ v).transpose(1, 2).reshape(b, n, c), sd, f'{p}proj')


def conv_ffn(x: torch.Tensor, hw: tuple[int, int], sd: dict[str, torch.Tensor], p: str) -> torch.Tensor:
    """FC -> ReLU (the release's -li MLP) -> 3×3 depth-wise conv -> GELU -> FC."""
    h = F.relu(linear(x, sd, f'{p}fc1'))
    b, _, c = h.shape
    w, bias = sd[f'{p}dwconv.dwconv.weight'], sd[f'{p}dwconv.dwconv.bias']
    h = F.conv2d(h.transpose(1, 2).reshape(b, c, *hw), w, bias, padding=1, groups=c)
    return linear(F.gelu(h.flatten(2).transpose(1, 2)), sd, f'{p}fc2')


def reference_b2_li(sd: dict[str, torch.Tensor], image: torch.Tensor) -> list[torch.Tensor]:
    """PVTv2-b2-li from official-layout weights: per stage an overlapping patch embedding
    (7/4 then 3/2, padding k//2) and LN, blocks ``X + LSRA(LN(X))`` and ``X + FFN(LN(X))``, a LN."""
    x, outs = image, []
    for s, (depth, heads) in enumerate(zip((3, 4, 6, 3), (1, 2, 5, 8)), start=1):
        k, stride = (7, 4) if s == 1 else (3, 2)
        x = F.conv2d(x, sd[f'patch_embed{s}.proj.weight'], sd[f'patch_embed{s}.proj.bias'], stride, k // 2)
        b, c, h, w = x.shape
        t = layer_norm(x.flatten(2).transpose(1, 2), sd, f'patch_embed{s}.norm')
        for j in range(depth):
            t = t + linear_sra(layer_norm(t, sd, f'block{s}.{j}.norm1'), (h, w), sd, f'block{s}.{j}.attn.', heads)
            t = t + conv_ffn(layer_norm(t, sd, f'block{s}.{j}.norm2'), (h, w), sd, f'block{s}.{j}.mlp.')
        x = layer_norm(t, sd, f'norm{s}').transpose(1, 2).reshape(b, c, h, w)
        outs.append(x)
    return outs


@pytest.fixture(scope='module')
def b2_li_official(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """(mmpvt b2-li loaded by ``init_cfg`` from an official-layout file, that file's state dict)."""
    official = to_official(randomize_(fresh_pvt('b2_li'), seed=3).state_dict())
    path = tmp_path_factory.mktemp('official') / 'pvt_v2_b2_li.pth'
    torch.save(official, path)
    ours = fresh_pvt('b2_li', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    ours.init_weights()
    return ours, official


@pytest.mark.parametrize('image_hw', [(160, 160), (96, 160)])
def test_b2_li_matches_the_papers_equations(b2_li_official, image_hw: tuple[int, int]) -> None:
    ours, official = b2_li_official
    image = torch.randn(1, 3, *image_hw, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        outs, refs = ours(image), reference_b2_li(official, image)
    assert [o.shape for o in outs] == [r.shape for r in refs]
    assert all(r.abs().max() > 0.1 for r in refs)
    diffs = [(o - r).abs().max().item() for o, r in zip(outs, refs, strict=True)]
    print(f'official b2_li -> mmpvt vs equations {image_hw}: max abs diff per stage {diffs}')
    assert max(diffs) < TOL


# --- a whole detector trained with mmdet's PVT moves over -----------------------------------------


def test_whole_mmdet_retinanet_checkpoint_moves_over(tmp_path: Path) -> None:
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdet'):  # the detector builds its data preprocessor by scope
        theirs = MMDET_MODELS.build(dict(RETINANET, backbone=dict(MMDET_ARCHS['tiny'], drop_path_rate=0.0)))
        backbone = dict(type='PVT', arch='tiny', drop_path_rate=0.0, embed_norm_eps=1e-6)
        ours = MMDET_MODELS.build(dict(RETINANET, backbone=backbone))
    source = randomize_(theirs).eval().state_dict()
    src, dst = tmp_path / 'retinanet_pvt-t_mmdet.pth', tmp_path / 'retinanet_pvt-t_mmpvt.pth'
    torch.save({'meta': {'epoch': 12, 'dataset_meta': {'classes': ('a', 'b', 'c')}}, 'state_dict': source}, src)
    assert load_cli().main([str(src), str(dst)]) == 0
    converted = torch.load(dst, weights_only=True)
    assert converted['meta']['epoch'] == 12
    others = [k for k in source if not k.startswith('backbone.')]
    assert len(others) > 10 and all(torch.equal(converted['state_dict'][k], source[k]) for k in others)

    load_checkpoint(ours, str(dst), strict=True)  # every key of the converted file fits, none is missing
    image = torch.randn(1, 3, 96, 160, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        outs, refs = ours.eval()._forward(image), theirs._forward(image)
    diffs = [
        (o - r).abs().max().item() for os_, rs in zip(outs, refs, strict=True) for o, r in zip(os_, rs, strict=True)
    ]
    print(f'RetinaNet head outputs, mmdet PVT-T vs converted mmpvt PVT-T: max abs diff {max(diffs)}')
    assert len(diffs) == 10 and max(diffs) < TOL
