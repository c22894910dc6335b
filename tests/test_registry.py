"""Registration: PVT builds from mmdet's and mmseg's registries and matches mmdet's PVT in size."""

from __future__ import annotations

import pytest
import torch
from mmdet.registry import MODELS as MMDET_MODELS
from mmengine.config import Config
from mmseg.registry import MODELS as MMSEG_MODELS

import mmpvt
from mmpvt.registry import MODELS as MMPVT_MODELS

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
    det_cfg.write_text(
        "_base_ = 'mmdet::retinanet/retinanet_r50_fpn_1x_coco.py'\n"
        "custom_imports = dict(imports=['mmpvt'], allow_failed_imports=False)\n"
        "model = dict(backbone=dict(_delete_=True, type='PVT', arch='tiny'),\n"
        '             neck=dict(in_channels=[64, 128, 320, 512]))\n'
    )
    detector = MMDET_MODELS.build(Config.fromfile(det_cfg).model)
    assert isinstance(detector.backbone, mmpvt.PVT)
    seg_cfg = tmp_path / 'fpn_pvt.py'
    seg_cfg.write_text(
        "_base_ = 'mmseg::sem_fpn/fpn_r50_4xb4-160k_ade20k-512x512.py'\n"
        "custom_imports = dict(imports=['mmpvt'], allow_failed_imports=False)\n"
        "model = dict(pretrained=None, backbone=dict(_delete_=True, type='mmpvt.PVT', arch='tiny'),\n"
        '             neck=dict(in_channels=[64, 128, 320, 512]))\n'
    )
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
