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


def test_unmodified_mmdet_and_mmseg_configs_use_pvt(tmp_path) -> None:
    """A stock config plus custom_imports and a backbone swap builds the whole model."""
    det = Config.fromfile('mmdet::retinanet/retinanet_r50_fpn_1x_coco.py')
    det.merge_from_dict(
        {
            'custom_imports': dict(imports=['mmpvt'], allow_failed_imports=False),
            'model.backbone': dict(_delete_=True, type='PVT', arch='tiny'),
            'model.neck.in_channels': [64, 128, 320, 512],
        }
    )
    detector = MMDET_MODELS.build(det.model)
    assert isinstance(detector.backbone, mmpvt.PVT)
    seg = Config.fromfile('mmseg::sem_fpn/fpn_r50_4xb4-80k_ade20k-512x512.py')
    seg.merge_from_dict(
        {
            'model.backbone': dict(_delete_=True, type='PVT', arch='tiny'),
            'model.neck.in_channels': [64, 128, 320, 512],
            'model.data_preprocessor': dict(type='SegDataPreProcessor', size=(512, 512)),
        }
    )
    segmentor = MMSEG_MODELS.build(seg.model)
    assert isinstance(segmentor.backbone, mmpvt.PVT)
    segmentor.eval()
    with torch.no_grad():
        logits = segmentor(torch.randn(1, 3, 64, 64), mode='tensor')
    assert logits.shape == (1, 150, 16, 16)
