"""Checkpoint conversion and loading: layouts, round trips, position-embedding resizing, errors, CLI."""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from types import ModuleType

import pytest
import torch
import torch.nn.functional as F
from helpers import (
    MMDET_ARCHS,
    RETINANET,
    captured_log,
    fresh_pvt,
    load_cli,
    mmdet_numerics_pvt,
    randomize_,
    stage_diffs,
    to_official,
    to_timm,
)

from mmpvt import PVT
from mmpvt.checkpoint import load_pretrained
from mmpvt.convert import convert_state_dict, convert_with_report


def random_pvt(arch: str, seed: int = 0) -> PVT:
    """A PVT whose every parameter is random (see :func:`randomize_`)."""
    return randomize_(fresh_pvt(arch), seed)


def assert_same_state(a: torch.nn.Module | dict, b: torch.nn.Module | dict) -> None:
    sa = a if isinstance(a, dict) else a.state_dict()
    sb = b if isinstance(b, dict) else b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert torch.equal(sa[key], sb[key]), key


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- conversion as a pure function ------------------------------------------------------------


@pytest.mark.parametrize('arch', ['tiny', 'b0', 'b2_li'])
def test_official_layout_converts_exactly(arch: str) -> None:
    model = random_pvt(arch)
    official = to_official(model.state_dict())
    before = {k: v.clone() for k, v in official.items()}
    converted, report = convert_with_report(official)
    assert report.layout == 'official' and report.prefix == ''
    assert sorted(report.dropped) == ['cls_token', 'head.bias', 'head.weight', 'norm.bias', 'norm.weight']
    assert report.kept == []
    assert_same_state(converted, model)
    assert_same_state(official, before)  # the input is not modified


@pytest.mark.parametrize('arch', ['b0', 'b2_li'])
def test_timm_layout_converts_exactly(arch: str) -> None:
    model = random_pvt(arch)
    timm = to_timm(to_official(model.state_dict()))
    assert 'stages.1.downsample.proj.weight' in timm and 'stages.0.blocks.0.mlp.dwconv.weight' in timm
    converted, report = convert_with_report(timm)
    assert (report.layout, report.prefix, report.kept) == ('timm', '', [])
    assert sorted(report.dropped) == ['head.bias', 'head.weight']
    assert_same_state(converted, model)
    _wrapped, report = convert_with_report({f'module.{k}': v for k, v in timm.items()})
    assert (report.layout, report.prefix) == ('timm', 'module.')


def test_timm_file_loads_through_init_cfg_with_the_official_files_outputs(tmp_path: Path) -> None:
    source = random_pvt('b1')
    official, timm = tmp_path / 'pvt_v2_b1.pth', tmp_path / 'pvt_v2_b1_timm.pth'
    torch.save(to_official(source.state_dict()), official)
    torch.save(to_timm(to_official(source.state_dict())), timm)
    image = torch.randn(1, 3, 64, 96)
    outputs = []
    for path in (official, timm):
        target = fresh_pvt('b1', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
        target.init_weights()
        with torch.no_grad():
            outputs.append(target(image))
    for a, b in zip(*outputs, strict=True):
        assert (a - b).abs().max().item() <= 1e-6 * a.abs().max().item()


def test_official_v1_drops_the_class_token_entry_of_stage_4() -> None:
    model = random_pvt('tiny')
    official = to_official(model.state_dict())
    assert official['pos_embed4'].shape == (1, 50, 512)
    converted = convert_state_dict(official)
    assert torch.equal(converted['stages.3.pos_embed'], official['pos_embed4'][:, 1:])
    assert converted['stages.0.pos_embed'].shape == (1, 3136, 64)


def test_mmpvt_layout_is_kept_and_prefixes_are_found() -> None:
    state = random_pvt('b0').state_dict()
    assert_same_state(convert_state_dict(state), state)
    detector = {f'backbone.{k}': v for k, v in to_official(state).items()} | {'neck.conv.weight': torch.ones(2)}
    converted, report = convert_with_report(detector)
    assert (report.layout, report.prefix) == ('official', 'backbone.')
    assert report.kept == ['neck.conv.weight']
    assert_same_state(
        {k: v for k, v in converted.items() if k.startswith('backbone.')},
        {f'backbone.{k}': v for k, v in state.items()},
    )


def test_unknown_or_ambiguous_layouts_are_errors() -> None:
    resnet = {'conv1.weight': torch.zeros(64, 3, 7, 7), 'layer1.0.conv1.weight': torch.zeros(64, 64, 1, 1)}
    with pytest.raises(ValueError, match=r'no PVT checkpoint layout recognised.*conv1\.weight'):
        convert_state_dict(resnet)
    state = random_pvt('b0').state_dict()
    two = {f'student.{k}': v for k, v in state.items()} | {f'teacher.{k}': v for k, v in state.items()}
    with pytest.raises(ValueError, match=r"several PVT backbones.*'student\.'.*'teacher\.'"):
        convert_state_dict(two)


# --- loading files ------------------------------------------------------------------------------


@pytest.mark.parametrize('wrap', ['bare', 'state_dict', 'model', 'backbone_prefix'])
def test_mmpvt_checkpoint_round_trip(tmp_path: Path, wrap: str) -> None:
    source = random_pvt('tiny')
    state = source.state_dict()
    saved = {
        'bare': state,
        'state_dict': {'meta': {'epoch': 3}, 'state_dict': state},
        'model': {'model': state, 'epoch': 3},
        'backbone_prefix': {'state_dict': {f'backbone.{k}': v for k, v in state.items()}},
    }[wrap]
    path = tmp_path / 'ckpt.pth'
    torch.save(saved, path)
    target = fresh_pvt('tiny', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    assert not torch.equal(target.stages[0].pos_embed, source.stages[0].pos_embed)
    target.init_weights()
    assert_same_state(target, source)


def test_init_cfg_loads_an_unconverted_official_file_and_leaves_it_alone(tmp_path: Path) -> None:
    source = random_pvt('small')
    path = tmp_path / 'pvt_small.pth'
    torch.save(to_official(source.state_dict()), path)
    digest_before, mtime_before = digest(path), path.stat().st_mtime_ns
    target = fresh_pvt('small', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    target.init_weights()
    assert_same_state(target, source)
    image = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        for a, b in zip(target(image), source(image)):
            assert torch.equal(a, b)
    assert digest(path) == digest_before and path.stat().st_mtime_ns == mtime_before
    assert list(tmp_path.iterdir()) == [path]


def test_position_embeddings_are_resized_to_the_pretrain_grid(tmp_path: Path) -> None:
    source = random_pvt('tiny')  # 224: grids 56, 28, 14, 7
    path = tmp_path / 'pvt_tiny.pth'
    torch.save(to_official(source.state_dict()), path)
    target = fresh_pvt('tiny', pretrain_img_size=320)  # grids 80, 40, 20, 10
    missing, unexpected = load_pretrained(target, path)
    assert missing == [] and unexpected == []
    for i, (old, new) in enumerate(zip((56, 28, 14, 7), (80, 40, 20, 10))):
        grid = source.stages[i].pos_embed.reshape(1, old, old, -1).permute(0, 3, 1, 2)
        expected = F.interpolate(grid, size=(new, new), mode='bilinear', align_corners=False)
        assert torch.equal(target.stages[i].pos_embed, expected.flatten(2).transpose(1, 2))
    # A 320×320 image: the source resizes its 224-grid embeddings at run time, the target stores them.
    image = torch.randn(1, 3, 320, 320)
    with torch.no_grad():
        for a, b in zip(target(image), source(image)):
            assert torch.equal(a, b)


@pytest.mark.parametrize(
    ('saved_arch', 'model_arch', 'message'),
    [
        ('small', 'tiny', r'stages\.0\.blocks\.2\.norm1\.weight is not in the model'),
        ('tiny', 'small', r"only 156 of the model's 296 keys found"),
        ('tiny', 'b1', r'stages\.0\.patch_embed\.proj\.weight: checkpoint \(64, 3, 4, 4\) vs model \(64, 3, 7, 7\)'),
        ('b2', 'b2_li', r'stages\.0\.blocks\.0\.attn\.sr\.weight: checkpoint \(64, 64, 8, 8\) vs model'),
    ],
)
def test_wrong_variant_is_an_error_naming_the_file(tmp_path: Path, saved_arch: str, model_arch: str, message: str):
    path = tmp_path / f'pvt_{saved_arch}.pth'
    torch.save(to_official(random_pvt(saved_arch).state_dict()), path)
    model = fresh_pvt(model_arch)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=rf'{re.escape(str(path))} does not fit this PVT: .*{message}'):
        load_pretrained(model, path)
    assert_same_state(model, before)  # nothing half-loaded


@pytest.mark.parametrize(
    ('saved_arch', 'model_arch', 'message'),
    [
        ('tiny', 'small', r"it provides 156 of the model's 296 tensors\. It looks like a checkpoint of PVT 'tiny'"),
        ('small', 'tiny', r'tensors the model lacks: stages\.0\.blocks\.2\.'),
        ('tiny', 'b1', r'shape mismatches: stages\.0\.patch_embed\.proj\.weight: checkpoint \(64, 3, 4, 4\)'),
    ],
)
def test_tools_refuse_another_variants_checkpoint_as_the_loader_does(
    tmp_path: Path, saved_arch: str, model_arch: str, message: str
) -> None:
    """``load_from``/``--resume``/``test.py`` use the loader's fit check: a shallower variant's half is not enough."""
    from mmpvt.launch import ConfigError
    from mmpvt.launch.checkpoints import check_checkpoint_fits

    path = tmp_path / f'pvt_{saved_arch}.pth'
    torch.save({'state_dict': random_pvt(saved_arch).state_dict()}, path)
    refused = rf'{re.escape(str(path))} is not a checkpoint of this PVT: .*{message}'
    with pytest.raises(ConfigError, match=refused) as err:
        check_checkpoint_fits(fresh_pvt(model_arch), str(path))
    hint = f"checkpoint of PVT '{saved_arch}' and the model is PVT '{model_arch}': set arch='{saved_arch}'"
    assert hint in str(err.value)  # the variant the file looks like, and the setting that would take it
    same = tmp_path / 'same.pth'
    torch.save({'state_dict': random_pvt(model_arch).state_dict()}, same)
    check_checkpoint_fits(fresh_pvt(model_arch), str(same))  # its own checkpoint fits


def test_a_resnet_checkpoint_is_an_error_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / 'resnet50.pth'
    torch.save({'state_dict': {'conv1.weight': torch.zeros(64, 3, 7, 7), 'fc.weight': torch.zeros(10, 4)}}, path)
    model = fresh_pvt('tiny', init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(ValueError, match=rf'cannot load {re.escape(str(path))}: no PVT checkpoint layout'):
        model.init_weights()


def test_truncated_file_is_an_error_naming_the_file(tmp_path: Path) -> None:
    good = tmp_path / 'good.pth'
    torch.save(to_official(random_pvt('b0').state_dict()), good)
    bad = tmp_path / 'truncated.pth'
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match=rf'cannot read checkpoint {re.escape(str(bad))}: .*truncated or corrupt'):
        load_pretrained(fresh_pvt('b0'), bad)
    with pytest.raises(FileNotFoundError, match=r'missing\.pth'):
        load_pretrained(fresh_pvt('b0'), tmp_path / 'missing.pth')


def test_random_bytes_are_an_error_naming_the_file(tmp_path: Path) -> None:
    """Not a torch file at all (no zip archive, no legacy header): corrupt, not an unsafe pickle."""
    bad = tmp_path / 'corrupt.pth'
    noise = torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    bad.write_bytes(noise.numpy().tobytes())
    with pytest.raises(ValueError, match=rf'cannot read checkpoint {re.escape(str(bad))}: .*truncated or corrupt'):
        load_pretrained(fresh_pvt('b0'), bad)
    model = fresh_pvt('b0', init_cfg=dict(type='Pretrained', checkpoint=str(bad)))
    with pytest.raises(ValueError, match=rf'cannot read checkpoint {re.escape(str(bad))}: .*truncated or corrupt'):
        model.init_weights()


@pytest.mark.parametrize('arch', ['tiny', 'b0'])
def test_whole_mmdet_detector_checkpoint_loads_through_init_cfg(tmp_path: Path, arch: str) -> None:
    """A RetinaNet trained with mmdet's own PVT: ``init_cfg`` takes its ``backbone.`` part, converted."""
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmengine.registry import DefaultScope

    in_channels = list(fresh_pvt(arch).out_channels)
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope('mmdet'):
        detector = MMDET_MODELS.build(
            dict(
                RETINANET,
                backbone=dict(MMDET_ARCHS[arch], drop_path_rate=0.0),
                neck=dict(RETINANET['neck'], in_channels=in_channels),
            )
        )
    state = randomize_(detector).state_dict()
    assert any(k.startswith('backbone.layers.') for k in state)  # mmdet's layout, not ours
    assert any(k.startswith('neck.') for k in state) and any(k.startswith('bbox_head.') for k in state)
    path = tmp_path / f'retinanet_pvt_{arch}_mmdet.pth'
    torch.save({'meta': {'epoch': 12}, 'state_dict': state}, path)

    ours = mmdet_numerics_pvt(arch, init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    ours.init_weights()
    diffs = stage_diffs(ours.eval(), detector.backbone.eval(), (96, 160))
    print(f'mmdet RetinaNet checkpoint -> mmpvt {arch}: max abs diff per stage {diffs}')
    assert max(diffs) < 1e-5


def test_missing_and_unexpected_keys_are_logged_by_name(tmp_path: Path) -> None:
    state = random_pvt('b0').state_dict()
    del state['stages.3.norm.weight']
    state['extra.weight'] = torch.zeros(1)
    path = tmp_path / 'partial.pth'
    torch.save(state, path)
    with captured_log() as records:
        missing, unexpected = load_pretrained(fresh_pvt('b0'), path)
    assert missing == ['stages.3.norm.weight'] and unexpected == ['extra.weight']
    logged = [record.getMessage() for record in records if record.levelno == logging.WARNING]
    assert logged == [
        'missing keys (left as initialised): stages.3.norm.weight',
        'unexpected keys (ignored): extra.weight',
    ]


# --- the command-line tool ------------------------------------------------------------------------


@pytest.fixture(scope='module')
def cli() -> ModuleType:
    return load_cli()


def test_cli_converts_an_official_file(tmp_path: Path, cli: ModuleType, capsys) -> None:
    source = random_pvt('b0')
    src, dst = tmp_path / 'pvt_v2_b0.pth', tmp_path / 'out' / 'b0_mmpvt.pth'
    torch.save(to_official(source.state_dict()), src)
    digest_before = digest(src)
    assert cli.main([str(src), str(dst)]) == 0
    printed = capsys.readouterr().out
    assert 'official layout' in printed
    assert 'mapped   block1.0.mlp.dwconv.dwconv.weight -> stages.0.blocks.0.mlp.dwconv.weight' in printed
    assert 'dropped  head.weight' in printed
    assert_same_state(torch.load(dst, weights_only=True), source.state_dict())
    assert digest(src) == digest_before
    assert sorted(p.name for p in (tmp_path / 'out').iterdir()) == ['b0_mmpvt.pth']  # no temporary left


def test_cli_converts_a_timm_file(tmp_path: Path, cli: ModuleType, capsys) -> None:
    source = random_pvt('b0')
    src, dst = tmp_path / 'pvt_v2_b0_timm.pth', tmp_path / 'b0_mmpvt.pth'
    torch.save(to_timm(to_official(source.state_dict())), src)
    assert cli.main([str(src), str(dst)]) == 0
    printed = capsys.readouterr().out
    assert 'timm layout' in printed
    assert 'mapped   stages.1.downsample.proj.weight -> stages.1.patch_embed.proj.weight' in printed
    assert_same_state(torch.load(dst, weights_only=True), source.state_dict())


def test_cli_refuses_to_overwrite(tmp_path: Path, cli: ModuleType, capsys) -> None:
    src, dst = tmp_path / 'pvt_v2_b0.pth', tmp_path / 'dst.pth'
    torch.save(to_official(random_pvt('b0').state_dict()), src)
    digest_before = digest(src)
    assert cli.main([str(src), str(src)]) == 1
    assert cli.main([str(src), str(tmp_path / '.' / 'pvt_v2_b0.pth'), '--force']) == 1
    assert 'refusing to write over the source checkpoint' in capsys.readouterr().err
    assert digest(src) == digest_before
    dst.write_bytes(b'keep me')
    assert cli.main([str(src), str(dst)]) == 1
    assert 'exists; pass --force' in capsys.readouterr().err
    assert dst.read_bytes() == b'keep me'
    assert cli.main([str(src), str(dst), '--force']) == 0
    assert 'stages.0.patch_embed.proj.weight' in torch.load(dst, weights_only=True)


def test_cli_reports_a_non_pvt_file(tmp_path: Path, cli: ModuleType, capsys) -> None:
    src, dst = tmp_path / 'resnet.pth', tmp_path / 'dst.pth'
    torch.save({'conv1.weight': torch.zeros(2, 3, 7, 7)}, src)
    assert cli.main([str(src), str(dst)]) == 1
    assert f'cannot convert {src}: no PVT checkpoint layout' in capsys.readouterr().err
    assert not dst.exists()
