"""Registration: PVT builds from mmdet's and mmseg's registries and matches mmdet's PVT in size.

mmpvt registers in its own registry and in mmengine's root one, whose children mmdet's and mmseg's
are: ``import mmpvt`` needs and imports neither library.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import checkout_env
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.config import Config
from mmengine.registry import MODELS as MMENGINE_MODELS
from mmseg.registry import MODELS as MMSEG_MODELS

import mmpvt
from mmpvt.registry import MODELS as MMPVT_MODELS
from mmpvt.registry import register_model

DET_CONFIG = (
    "_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'\n"
    "custom_imports = dict(imports=['mmpvt'], allow_failed_imports=False)\n"
    "model = dict(backbone=dict(_delete_=True, type='PVT', arch='tiny'),\n"
    '             neck=dict(in_channels=[64, 128, 320, 512]))\n'
)
SEG_CONFIG = (
    "_base_ = 'mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py'\n"
    "custom_imports = dict(imports=['mmpvt'], allow_failed_imports=False)\n"
    "model = dict(pretrained=None, backbone=dict(_delete_=True, type='mmpvt.PVT', arch='tiny'),\n"
    '             neck=dict(in_channels=[64, 128, 320, 512]))\n'
)

# For each mmdet or mmseg module that `import mmpvt` imports: the innermost mmpvt file on the stack.
IMPORTERS_OF_MMDET_AND_MMSEG = textwrap.dedent(
    """
    import json
    import sys
    import traceback

    importers = {}


    class RecordImporter:
        def find_spec(self, name, path=None, target=None):
            if name in ('mmdet', 'mmseg'):
                files = [frame.filename for frame in traceback.extract_stack() if '/mmpvt/' in frame.filename]
                importers[name] = 'mmpvt/' + files[-1].rsplit('/mmpvt/', 1)[1] if files else None
            return None  # finds nothing: the ordinary finders import the module


    sys.meta_path.insert(0, RecordImporter())
    import mmpvt

    print(json.dumps(importers))
    """
)

# A stock config of one library builds every mmpvt name with the other library blocked.
BUILD_WITH_OTHER_BLOCKED = textwrap.dedent(
    """
    import json
    import sys

    sys.modules[{blocked!r}] = None  # import {blocked} now raises ImportError

    from mmengine.config import Config
    from mmengine.registry import init_default_scope

    cfg = Config.fromfile({config!r})  # its custom_imports imports mmpvt
    init_default_scope({scope!r})  # as the Runner does
    from {scope}.registry import MODELS

    built = {{}}
    for type_name, arch, channels in (
        ('PVT', 'tiny', [64, 128, 320, 512]),
        ('mmpvt.PVT', 'tiny', [64, 128, 320, 512]),
        ('PVTv2', 'b0', [32, 64, 160, 256]),
    ):
        cfg.model.backbone = dict(type=type_name, arch=arch, depths=(1, 1, 1, 1))
        cfg.model.neck.in_channels = channels
        backbone = MODELS.build(cfg.model).backbone
        built[type_name] = [type(backbone).__module__ + '.' + type(backbone).__name__, list(backbone.out_channels)]
    layer = MODELS.build(dict(type='SpatialReductionAttention', embed_dims=64, num_heads=2, sr_ratio=4))
    built['SpatialReductionAttention'] = [type(layer).__module__ + '.' + type(layer).__name__, []]
    print(json.dumps(built))
    """
)

MMDET_ARCH = {
    'tiny': dict(num_layers=(2, 2, 2, 2)),
    'small': dict(num_layers=(3, 4, 6, 3)),
    'medium': dict(num_layers=(3, 4, 18, 3)),
    'large': dict(num_layers=(3, 8, 27, 3)),
}

MMDET_V2_ARCH = {
    'b0': dict(embed_dims=32, num_layers=(2, 2, 2, 2)),
    'b1': dict(embed_dims=64, num_layers=(2, 2, 2, 2)),
    'b2': dict(embed_dims=64, num_layers=(3, 4, 6, 3)),
    'b3': dict(embed_dims=64, num_layers=(3, 4, 18, 3)),
    'b4': dict(embed_dims=64, num_layers=(3, 8, 27, 3)),
    'b5': dict(embed_dims=64, num_layers=(3, 6, 40, 3), mlp_ratios=(4, 4, 4, 4)),
}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize('registry', [MMDET_MODELS, MMSEG_MODELS, MMPVT_MODELS], ids=['mmdet', 'mmseg', 'mmpvt'])
@pytest.mark.parametrize('type_name', ['PVT', 'mmpvt.PVT'])
def test_builds_from_every_registry(registry, type_name: str) -> None:
    model = registry.build(dict(type=type_name, arch='tiny', out_indices=(1, 2, 3)))
    assert isinstance(model, mmpvt.PVT)
    assert model.out_channels == (128, 320, 512)


def test_sra_layer_is_registered() -> None:
    layer = MMDET_MODELS.build(dict(type='mmpvt.SpatialReductionAttention', embed_dims=64, num_heads=2, sr_ratio=4))
    assert isinstance(layer, mmpvt.SpatialReductionAttention)
    assert MMSEG_MODELS.get('SpatialReductionAttention') is mmpvt.SpatialReductionAttention


def test_does_not_shadow_mmdet_pvt() -> None:
    from mmdet.models.backbones.pvt import PyramidVisionTransformer, PyramidVisionTransformerV2

    assert MMDET_MODELS.get('PyramidVisionTransformer') is PyramidVisionTransformer
    assert MMDET_MODELS.get('PyramidVisionTransformerV2') is PyramidVisionTransformerV2
    assert MMDET_MODELS.get('PVT') is mmpvt.PVT


@pytest.mark.parametrize('arch', list(MMDET_ARCH))
def test_parameter_count_equals_mmdet(arch: str) -> None:
    ours = mmpvt.PVT(arch)
    theirs = MMDET_MODELS.build(dict(type='PyramidVisionTransformer', **MMDET_ARCH[arch]))
    assert n_params(ours) == n_params(theirs)


@pytest.mark.parametrize('arch', list(MMDET_V2_ARCH))
def test_v2_parameter_count_equals_mmdet(arch: str) -> None:
    ours = MMDET_MODELS.build(dict(type='PVTv2', arch=arch))
    theirs = MMDET_MODELS.build(dict(type='PyramidVisionTransformerV2', **MMDET_V2_ARCH[arch]))
    assert n_params(ours) == n_params(theirs)


def test_unmodified_mmdet_and_mmseg_configs_use_pvt(tmp_path) -> None:
    """A stock config plus custom_imports and a backbone swap builds the whole model."""
    det_cfg = tmp_path / 'retinanet_pvt.py'
    det_cfg.write_text(DET_CONFIG)
    detector = MMDET_MODELS.build(Config.fromfile(det_cfg).model)
    assert isinstance(detector.backbone, mmpvt.PVT)
    seg_cfg = tmp_path / 'fpn_pvt.py'
    seg_cfg.write_text(SEG_CONFIG)
    segmentor = MMSEG_MODELS.build(Config.fromfile(seg_cfg).model)
    assert isinstance(segmentor.backbone, mmpvt.PVT)
    segmentor.eval()
    with torch.no_grad():
        logits = segmentor(torch.randn(1, 3, 64, 64), mode='tensor')
    assert logits.shape == (1, 150, 16, 16)


def test_pretrained_argument_becomes_init_cfg() -> None:
    model = mmpvt.PVT('tiny', pretrained='pretrained/pvt_tiny.pth')
    assert model.init_cfg == dict(type='Pretrained', checkpoint='pretrained/pvt_tiny.pth')
    with pytest.raises(ValueError, match='either pretrained or init_cfg'):
        mmpvt.PVT('tiny', pretrained='a.pth', init_cfg=dict(type='Pretrained', checkpoint='b.pth'))


def test_import_mmpvt_imports_neither_mmdet_nor_mmseg() -> None:
    proc = subprocess.run(
        [sys.executable, '-c', IMPORTERS_OF_MMDET_AND_MMSEG], capture_output=True, text=True, env=checkout_env()
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    importers = json.loads(proc.stdout.splitlines()[-1])
    assert importers == {}, f'import mmpvt imported these libraries, from these files: {importers}'


@pytest.mark.parametrize(
    ('scope', 'config', 'blocked'), [('mmdet', DET_CONFIG, 'mmseg'), ('mmseg', SEG_CONFIG, 'mmdet')], ids=['det', 'seg']
)
def test_stock_config_builds_with_the_other_library_blocked(
    tmp_path: Path, scope: str, config: str, blocked: str
) -> None:
    config_file = tmp_path / f'{scope}_pvt.py'
    config_file.write_text(config)
    code = BUILD_WITH_OTHER_BLOCKED.format(blocked=blocked, config=str(config_file), scope=scope)
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=checkout_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    built = json.loads(proc.stdout.splitlines()[-1])
    assert built == {
        'PVT': ['mmpvt.models.backbone.PVT', [64, 128, 320, 512]],
        'mmpvt.PVT': ['mmpvt.models.backbone.PVT', [64, 128, 320, 512]],
        'PVTv2': ['mmpvt.models.backbone.PVTv2', [32, 64, 160, 256]],
        'SpatialReductionAttention': ['mmpvt.layers.attention.SpatialReductionAttention', []],
    }


@pytest.mark.parametrize('registry', [MMDET_MODELS, MMSEG_MODELS], ids=['mmdet', 'mmseg'])
def test_the_library_owns_none_of_mmpvts_names(registry) -> None:
    """Their registries hold none of mmpvt's names, so type='PVT' reaches mmpvt's through the root and hides nothing."""
    registry.import_from_location()  # the library's own models register lazily
    ours = set(MMPVT_MODELS.module_dict)
    assert ours == {'PVT', 'PVTv2', 'SpatialReductionAttention'}
    assert not ours & set(registry.module_dict)
    assert all(registry.get(name) is MMPVT_MODELS.get(name) for name in ours)


def test_a_name_clash_raises_and_replaces_nothing() -> None:
    impostor = type('PVT', (), {})
    with pytest.raises(KeyError, match='PVT is already registered'):
        register_model(impostor)
    for registry in (MMENGINE_MODELS, MMPVT_MODELS, MMDET_MODELS, MMSEG_MODELS):
        assert registry.get('PVT') is mmpvt.PVT
