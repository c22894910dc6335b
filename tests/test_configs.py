"""Every config in configs/ loads, builds its model in its library's registry and fits its backbone."""

from __future__ import annotations

from pathlib import Path

import pytest
from mmengine.config import Config
from mmengine.registry import DefaultScope

import mmpvt

CONFIG_DIR = Path(__file__).resolve().parents[1] / 'configs'
CONFIGS = sorted(p for p in CONFIG_DIR.rglob('*.py') if '_base_' not in p.parts)
FAMILIES = ('retinanet_pvt_{}_fpn_1x_coco', 'mask_rcnn_pvt_{}_fpn_1x_coco')
SEG_FAMILIES = ('fpn_pvt_{}_512x512_40k_ade20k', 'upernet_pvt_{}_512x512_160k_ade20k')
ARCHS = {'t': 'tiny', 's': 'small', 'm': 'medium', 'l': 'large'}
V2_ARCHS = ('b0', 'b1', 'b2', 'b3', 'b4', 'b5')

#: config name -> (backbone type, arch, pretrained checkpoint) of every full-size config.
VARIANTS = {
    **{
        family.format(short): ('PVT', arch, f'pretrained/pvt_{arch}.pth')
        for family in FAMILIES + SEG_FAMILIES
        for short, arch in ARCHS.items()
    },
    **{
        f'{family}_pvtv2_{arch}_fpn_1x_coco': ('PVTv2', arch, f'pretrained/pvt_v2_{arch}.pth')
        for family in ('retinanet', 'mask_rcnn')
        for arch in (*V2_ARCHS, 'b2_li')
    },
    **{f'fpn_pvtv2_{arch}_512x512_40k_ade20k': ('PVTv2', arch, f'pretrained/pvt_v2_{arch}.pth') for arch in V2_ARCHS},
    'upernet_pvtv2_b2_512x512_160k_ade20k': ('PVTv2', 'b2', 'pretrained/pvt_v2_b2.pth'),
}


def registry_of(scope: str):
    if scope == 'mmdet':
        from mmdet.registry import MODELS
    elif scope == 'mmseg':
        from mmseg.registry import MODELS
    else:
        raise AssertionError(f'unexpected default_scope {scope!r}')
    return MODELS


def neck_in_channels(cfg: Config) -> list[int]:
    """What the model's first consumer of backbone features expects, per backbone output."""
    if 'neck' in cfg.model:
        return list(cfg.model.neck.in_channels)
    return list(cfg.model.decode_head.in_channels)


def test_the_expected_configs_exist() -> None:
    """The 16 v1 configs and the 21 v2 ones are all there, and nothing else at the top level."""
    assert len(VARIANTS) == 16 + 21
    assert sorted(p.stem for p in CONFIGS if p.parent == CONFIG_DIR) == sorted(VARIANTS)


@pytest.mark.parametrize('path', CONFIGS, ids=[str(p.relative_to(CONFIG_DIR)) for p in CONFIGS])
def test_config_builds_and_neck_fits_backbone(path: Path) -> None:
    cfg = Config.fromfile(str(path))
    assert cfg.custom_imports == dict(imports=['mmpvt'], allow_failed_imports=False)
    registry = registry_of(cfg.default_scope)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = registry.build(cfg.model)  # init_weights() not called: no pretrained file needed
    backbone = model.backbone
    assert isinstance(backbone, mmpvt.PVT)
    assert neck_in_channels(cfg) == list(backbone.out_channels)
    assert backbone.out_strides == (4, 8, 16, 32)
    if 'auxiliary_head' in cfg.model:
        assert cfg.model.auxiliary_head.in_channels == backbone.out_channels[cfg.model.auxiliary_head.in_index]


@pytest.mark.parametrize('name', list(VARIANTS))
def test_variant_and_pretrained_checkpoint(name: str) -> None:
    backbone_type, arch, checkpoint = VARIANTS[name]
    backbone = Config.fromfile(str(CONFIG_DIR / f'{name}.py')).model.backbone
    assert (backbone.type, backbone.arch) == (backbone_type, arch)
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint=checkpoint)


#: The official recipes (README, ../shared/REFERENCE.md): AdamW; detection 1x lr 1e-4 (RetinaNet) or
#: 2e-4 (Mask R-CNN), weight decay 1e-4, 2 images per GPU, except PVT-L Mask R-CNN and PVTv2-b4/b5
#: at lr / 1.4 with 1 image per GPU; Semantic FPN 2e-4, 1e-4, 4 per GPU; UPerNet 6e-5, 0.01, 2 per GPU.
#: auto_scale_lr's base batch is the paper's 8 GPUs times the images per GPU.
#: name: (lr, weight decay, images per GPU, auto_scale_lr base_batch_size)
RECIPES = {
    'retinanet_pvt_t_fpn_1x_coco': (1e-4, 1e-4, 2, 16),
    'retinanet_pvt_s_fpn_1x_coco': (1e-4, 1e-4, 2, 16),
    'retinanet_pvt_m_fpn_1x_coco': (1e-4, 1e-4, 2, 16),
    'retinanet_pvt_l_fpn_1x_coco': (1e-4, 1e-4, 2, 16),  # the official release: 1e-4 / 1.4, 1 per GPU
    'mask_rcnn_pvt_t_fpn_1x_coco': (2e-4, 1e-4, 2, 16),
    'mask_rcnn_pvt_s_fpn_1x_coco': (2e-4, 1e-4, 2, 16),
    'mask_rcnn_pvt_m_fpn_1x_coco': (2e-4, 1e-4, 2, 16),
    'mask_rcnn_pvt_l_fpn_1x_coco': (2e-4 / 1.4, 1e-4, 1, 8),
    'retinanet_pvtv2_b0_fpn_1x_coco': (1e-4, 1e-4, 2, 16),
    'retinanet_pvtv2_b1_fpn_1x_coco': (1e-4, 1e-4, 2, 16),
    'retinanet_pvtv2_b2_fpn_1x_coco': (1e-4, 1e-4, 2, 16),
    'retinanet_pvtv2_b2_li_fpn_1x_coco': (1e-4, 1e-4, 2, 16),
    'retinanet_pvtv2_b3_fpn_1x_coco': (1e-4, 1e-4, 2, 16),
    'retinanet_pvtv2_b4_fpn_1x_coco': (1e-4 / 1.4, 1e-4, 1, 8),
    'retinanet_pvtv2_b5_fpn_1x_coco': (1e-4 / 1.4, 1e-4, 1, 8),
    'mask_rcnn_pvtv2_b0_fpn_1x_coco': (2e-4, 1e-4, 2, 16),
    'mask_rcnn_pvtv2_b1_fpn_1x_coco': (2e-4, 1e-4, 2, 16),
    'mask_rcnn_pvtv2_b2_fpn_1x_coco': (2e-4, 1e-4, 2, 16),
    'mask_rcnn_pvtv2_b2_li_fpn_1x_coco': (2e-4, 1e-4, 2, 16),
    'mask_rcnn_pvtv2_b3_fpn_1x_coco': (2e-4, 1e-4, 2, 16),
    'mask_rcnn_pvtv2_b4_fpn_1x_coco': (2e-4 / 1.4, 1e-4, 1, 8),
    'mask_rcnn_pvtv2_b5_fpn_1x_coco': (2e-4 / 1.4, 1e-4, 1, 8),
    'fpn_pvt_t_512x512_40k_ade20k': (2e-4, 1e-4, 4, 32),
    'fpn_pvt_s_512x512_40k_ade20k': (2e-4, 1e-4, 4, 32),
    'fpn_pvt_m_512x512_40k_ade20k': (2e-4, 1e-4, 4, 32),
    'fpn_pvt_l_512x512_40k_ade20k': (2e-4, 1e-4, 4, 32),
    'fpn_pvtv2_b0_512x512_40k_ade20k': (2e-4, 1e-4, 4, 32),
    'fpn_pvtv2_b1_512x512_40k_ade20k': (2e-4, 1e-4, 4, 32),
    'fpn_pvtv2_b2_512x512_40k_ade20k': (2e-4, 1e-4, 4, 32),
    'fpn_pvtv2_b3_512x512_40k_ade20k': (2e-4, 1e-4, 4, 32),
    'fpn_pvtv2_b4_512x512_40k_ade20k': (2e-4, 1e-4, 4, 32),
    'fpn_pvtv2_b5_512x512_40k_ade20k': (2e-4, 1e-4, 4, 32),
    'upernet_pvt_t_512x512_160k_ade20k': (6e-5, 0.01, 2, 16),
    'upernet_pvt_s_512x512_160k_ade20k': (6e-5, 0.01, 2, 16),
    'upernet_pvt_m_512x512_160k_ade20k': (6e-5, 0.01, 2, 16),
    'upernet_pvt_l_512x512_160k_ade20k': (6e-5, 0.01, 2, 16),
    'upernet_pvtv2_b2_512x512_160k_ade20k': (6e-5, 0.01, 2, 16),
}


def test_every_config_has_a_recipe_row() -> None:
    assert sorted(RECIPES) == sorted(VARIANTS)


@pytest.mark.parametrize('name', list(RECIPES))
def test_recipe(name: str) -> None:
    lr, weight_decay, batch_size, base_batch_size = RECIPES[name]
    cfg = Config.fromfile(str(CONFIG_DIR / f'{name}.py'))
    optimizer = cfg.optim_wrapper.optimizer
    assert optimizer.type == 'AdamW'
    assert 'momentum' not in optimizer
    assert optimizer.lr == pytest.approx(lr, rel=1e-12)
    assert optimizer.weight_decay == weight_decay
    assert cfg.train_dataloader.batch_size == batch_size
    assert cfg.auto_scale_lr.base_batch_size == base_batch_size == 8 * batch_size
    custom_keys = cfg.optim_wrapper.paramwise_cfg.custom_keys
    assert custom_keys['norm'] == dict(decay_mult=0.0)
    assert custom_keys['pos_embed'] == dict(decay_mult=0.0)


def test_detection_schedule() -> None:
    cfg = Config.fromfile(str(CONFIG_DIR / 'retinanet_pvt_t_fpn_1x_coco.py'))
    warmup, steps = cfg.param_scheduler
    assert cfg.train_cfg.max_epochs == 12
    assert (warmup.type, warmup.end, warmup.by_epoch) == ('LinearLR', 500, False)
    assert (steps.type, steps.milestones) == ('MultiStepLR', [8, 11])


def test_segmentation_schedules() -> None:
    fpn = Config.fromfile(str(CONFIG_DIR / 'fpn_pvt_t_512x512_40k_ade20k.py'))
    (poly,) = fpn.param_scheduler
    assert (fpn.train_cfg.max_iters, poly.type, poly.power, poly.end) == (40000, 'PolyLR', 0.9, 40000)
    assert fpn.crop_size == (512, 512)
    upernet = Config.fromfile(str(CONFIG_DIR / 'upernet_pvt_t_512x512_160k_ade20k.py'))
    warmup, poly = upernet.param_scheduler
    assert upernet.train_cfg.max_iters == 160000
    assert (warmup.type, warmup.end, poly.power, poly.end) == ('LinearLR', 1500, 1.0, 160000)


def test_no_weight_decay_on_norms_and_position_embeddings() -> None:
    """The optimizer built from a config puts decay 0 on every norm and position embedding."""
    from mmengine.optim import build_optim_wrapper

    cfg = Config.fromfile(str(CONFIG_DIR / 'toy' / 'retinanet_pvt_t_fpn_toy_coco.py'))
    with DefaultScope.overwrite_default_scope('mmdet'):
        model = registry_of('mmdet').build(cfg.model)
        optimizer = build_optim_wrapper(model, cfg.optim_wrapper).optimizer
    decay = {id(p): group['weight_decay'] for group in optimizer.param_groups for p in group['params']}
    for name, param in model.named_parameters():
        no_decay = 'norm' in name or 'pos_embed' in name
        assert (decay[id(param)] == 0) == no_decay, name
