"""Every config in configs/ loads, builds its model in its library's registry and fits its backbone."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import VARIANTS
from mmengine.config import Config
from mmengine.registry import DefaultScope

import mmpvt

CONFIG_DIR = Path(__file__).resolve().parents[1] / 'configs'
CONFIGS = sorted(p for p in CONFIG_DIR.rglob('*.py') if '_base_' not in p.parts)


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
    # the pyramid's strides for the stages the head takes (all four; DINO three, DETR the last)
    assert backbone.out_strides == tuple((4, 8, 16, 32)[i] for i in backbone.out_indices)
    assert backbone.out_indices == ((3,) if 'detr' in path.stem else (1, 2, 3) if 'dino' in path.stem else (0, 1, 2, 3))
    if path.stem in RECIPES:  # stochastic depth rises linearly from 0 to the recipe's drop_path_rate
        drop_path_rate = RECIPES[path.stem][-1]
        assert backbone.stages[0].blocks[0].drop_path.drop_prob == 0.0
        assert backbone.stages[-1].blocks[-1].drop_path.drop_prob == pytest.approx(drop_path_rate, abs=1e-7)
    if 'auxiliary_head' in cfg.model:
        assert cfg.model.auxiliary_head.in_channels == backbone.out_channels[cfg.model.auxiliary_head.in_index]


@pytest.mark.parametrize('name', list(VARIANTS))
def test_variant_and_pretrained_checkpoint(name: str) -> None:
    backbone_type, arch, checkpoint = VARIANTS[name]
    backbone = Config.fromfile(str(CONFIG_DIR / f'{name}.py')).model.backbone
    assert (backbone.type, backbone.arch) == (backbone_type, arch)
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint=checkpoint)


#: The official recipes (whai362/PVT branch v2 detection/configs, segmentation/configs/sem_fpn/PVT,
#: whai362/PVTv2-Seg configs/sem_fpn/PVTv2; audited in docs/recipes.md): AdamW; detection 1x lr 1e-4
#: (RetinaNet) or 2e-4 (Mask R-CNN), weight decay 1e-4, 2 images per GPU, except PVT-L and PVTv2-b4/b5
#: (RetinaNet and Mask R-CNN) at lr / 1.4 with 1 image per GPU; Semantic FPN 2e-4, 1e-4, 4 per GPU;
#: UPerNet (mmseg's Swin recipe, no official PVT one) 6e-5, 0.01, 2 per GPU. auto_scale_lr's base
#: batch is the paper's 8 GPUs times the images per GPU. drop_path_rate: the official backbones'
#: own value, 0.1 except the detection pvt_medium and pvt_large, which leave it at 0.0.
#: name: (lr, weight decay, images per GPU, auto_scale_lr base_batch_size, drop_path_rate)
RECIPES = {
    'retinanet_pvt_t_fpn_1x_coco': (1e-4, 1e-4, 2, 16, 0.1),
    'retinanet_pvt_s_fpn_1x_coco': (1e-4, 1e-4, 2, 16, 0.1),
    'retinanet_pvt_m_fpn_1x_coco': (1e-4, 1e-4, 2, 16, 0.0),
    'retinanet_pvt_l_fpn_1x_coco': (1e-4 / 1.4, 1e-4, 1, 8, 0.0),
    'mask_rcnn_pvt_t_fpn_1x_coco': (2e-4, 1e-4, 2, 16, 0.1),
    'mask_rcnn_pvt_s_fpn_1x_coco': (2e-4, 1e-4, 2, 16, 0.1),
    'mask_rcnn_pvt_m_fpn_1x_coco': (2e-4, 1e-4, 2, 16, 0.0),
    'mask_rcnn_pvt_l_fpn_1x_coco': (2e-4 / 1.4, 1e-4, 1, 8, 0.0),
    'retinanet_pvtv2_b0_fpn_1x_coco': (1e-4, 1e-4, 2, 16, 0.1),
    'retinanet_pvtv2_b1_fpn_1x_coco': (1e-4, 1e-4, 2, 16, 0.1),
    'retinanet_pvtv2_b2_fpn_1x_coco': (1e-4, 1e-4, 2, 16, 0.1),
    'retinanet_pvtv2_b2_li_fpn_1x_coco': (1e-4, 1e-4, 2, 16, 0.1),
    'retinanet_pvtv2_b3_fpn_1x_coco': (1e-4, 1e-4, 2, 16, 0.1),
    'retinanet_pvtv2_b4_fpn_1x_coco': (1e-4 / 1.4, 1e-4, 1, 8, 0.1),
    'retinanet_pvtv2_b5_fpn_1x_coco': (1e-4 / 1.4, 1e-4, 1, 8, 0.1),
    'mask_rcnn_pvtv2_b0_fpn_1x_coco': (2e-4, 1e-4, 2, 16, 0.1),
    'mask_rcnn_pvtv2_b1_fpn_1x_coco': (2e-4, 1e-4, 2, 16, 0.1),
    'mask_rcnn_pvtv2_b2_fpn_1x_coco': (2e-4, 1e-4, 2, 16, 0.1),
    'mask_rcnn_pvtv2_b2_li_fpn_1x_coco': (2e-4, 1e-4, 2, 16, 0.1),
    'mask_rcnn_pvtv2_b3_fpn_1x_coco': (2e-4, 1e-4, 2, 16, 0.1),
    'mask_rcnn_pvtv2_b4_fpn_1x_coco': (2e-4 / 1.4, 1e-4, 1, 8, 0.1),
    'mask_rcnn_pvtv2_b5_fpn_1x_coco': (2e-4 / 1.4, 1e-4, 1, 8, 0.1),
    'fpn_pvt_t_512x512_40k_ade20k': (2e-4, 1e-4, 4, 32, 0.1),
    'fpn_pvt_s_512x512_40k_ade20k': (2e-4, 1e-4, 4, 32, 0.1),
    'fpn_pvt_m_512x512_40k_ade20k': (2e-4, 1e-4, 4, 32, 0.1),
    'fpn_pvt_l_512x512_40k_ade20k': (2e-4, 1e-4, 4, 32, 0.1),
    'fpn_pvtv2_b0_512x512_40k_ade20k': (2e-4, 1e-4, 4, 32, 0.1),
    'fpn_pvtv2_b1_512x512_40k_ade20k': (2e-4, 1e-4, 4, 32, 0.1),
    'fpn_pvtv2_b2_512x512_40k_ade20k': (2e-4, 1e-4, 4, 32, 0.1),
    'fpn_pvtv2_b3_512x512_40k_ade20k': (2e-4, 1e-4, 4, 32, 0.1),
    'fpn_pvtv2_b4_512x512_40k_ade20k': (2e-4, 1e-4, 4, 32, 0.1),
    'fpn_pvtv2_b5_512x512_40k_ade20k': (2e-4, 1e-4, 4, 32, 0.1),
    'upernet_pvt_t_512x512_160k_ade20k': (6e-5, 0.01, 2, 16, 0.1),
    'upernet_pvt_s_512x512_160k_ade20k': (6e-5, 0.01, 2, 16, 0.1),
    'upernet_pvt_m_512x512_160k_ade20k': (6e-5, 0.01, 2, 16, 0.1),
    'upernet_pvt_l_512x512_160k_ade20k': (6e-5, 0.01, 2, 16, 0.1),
    'upernet_pvtv2_b2_512x512_160k_ade20k': (6e-5, 0.01, 2, 16, 0.1),
}


def test_every_config_has_a_recipe_row() -> None:
    assert sorted(RECIPES) == sorted(VARIANTS)


@pytest.mark.parametrize('name', list(RECIPES))
def test_recipe(name: str) -> None:
    lr, weight_decay, batch_size, base_batch_size, _ = RECIPES[name]
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


DETECTION = [name for name in RECIPES if name.endswith('_coco')]
SEMANTIC_FPN = [name for name in RECIPES if name.startswith('fpn_')]
UPERNET = [name for name in RECIPES if name.startswith('upernet_')]


def pipeline_step(pipeline: list, type_: str) -> dict:
    (step,) = [step for step in pipeline if step['type'] == type_]
    return step


def assert_plain_optim_wrapper(cfg: Config) -> None:
    """fp32 (no AmpOptimWrapper) and no gradient clipping, as every official 1x / 40k config."""
    assert cfg.optim_wrapper.type == 'OptimWrapper'
    assert cfg.optim_wrapper.get('clip_grad') is None
    assert tuple(cfg.optim_wrapper.optimizer.betas) == (0.9, 0.999)


@pytest.mark.parametrize('name', DETECTION)
def test_detection_recipe(name: str) -> None:
    """12 epochs, lr x0.1 at 8 and 11, 500-iteration linear warm-up from 0.001, (1333, 800) images
    padded to 32, FPN with 5 outputs (RetinaNet: from stage 2 plus extra convs on its input)."""
    cfg = Config.fromfile(str(CONFIG_DIR / f'{name}.py'))
    warmup, steps = cfg.param_scheduler
    assert cfg.train_cfg.max_epochs == 12
    assert (warmup.type, warmup.start_factor, warmup.begin, warmup.end, warmup.by_epoch) == (
        'LinearLR',
        0.001,
        0,
        500,
        False,
    )
    assert (steps.type, steps.milestones, steps.gamma, steps.by_epoch) == ('MultiStepLR', [8, 11], 0.1, True)
    assert_plain_optim_wrapper(cfg)
    for pipeline in (cfg.train_dataloader.dataset.pipeline, cfg.test_dataloader.dataset.pipeline):
        resize = pipeline_step(pipeline, 'Resize')
        assert (tuple(resize.scale), resize.keep_ratio) == ((1333, 800), True)
    assert pipeline_step(cfg.train_dataloader.dataset.pipeline, 'RandomFlip').prob == 0.5
    assert cfg.model.data_preprocessor.pad_size_divisor == 32
    neck = cfg.model.neck
    assert (neck.type, neck.out_channels, neck.num_outs) == ('FPN', 256, 5)
    if name.startswith('retinanet'):
        assert (neck.start_level, neck.add_extra_convs) == (1, 'on_input')
    else:
        assert neck.get('start_level', 0) == 0 and not neck.get('add_extra_convs', False)


@pytest.mark.parametrize('name', SEMANTIC_FPN + UPERNET)
def test_segmentation_recipe(name: str) -> None:
    """Semantic FPN: poly 0.9 over 40k iterations, no warm-up; UPerNet: 1500-iteration warm-up, then
    poly 1.0 to 160k. Both: 512x512 crops of images resized to (2048, 512) x [0.5, 2]."""
    cfg = Config.fromfile(str(CONFIG_DIR / f'{name}.py'))
    if name in SEMANTIC_FPN:
        (poly,) = cfg.param_scheduler
        assert cfg.train_cfg.max_iters == 40000
        assert (poly.type, poly.power, poly.eta_min, poly.begin, poly.end) == ('PolyLR', 0.9, 0.0, 0, 40000)
        assert (cfg.model.neck.out_channels, cfg.model.neck.num_outs, cfg.model.decode_head.channels) == (256, 4, 128)
    else:
        warmup, poly = cfg.param_scheduler
        assert cfg.train_cfg.max_iters == 160000
        assert (warmup.type, warmup.start_factor, warmup.end) == ('LinearLR', 1e-6, 1500)
        assert (poly.type, poly.power, poly.eta_min, poly.begin, poly.end) == ('PolyLR', 1.0, 0.0, 1500, 160000)
    assert_plain_optim_wrapper(cfg)
    assert cfg.crop_size == (512, 512)
    train = cfg.train_dataloader.dataset.pipeline
    resize = pipeline_step(train, 'RandomResize')
    assert (tuple(resize.scale), tuple(resize.ratio_range), resize.keep_ratio) == ((2048, 512), (0.5, 2.0), True)
    crop = pipeline_step(train, 'RandomCrop')
    assert (tuple(crop.crop_size), crop.cat_max_ratio) == ((512, 512), 0.75)
    assert pipeline_step(train, 'RandomFlip').prob == 0.5
    test_resize = pipeline_step(cfg.test_dataloader.dataset.pipeline, 'Resize')
    assert (tuple(test_resize.scale), test_resize.keep_ratio) == ((2048, 512), True)
    assert cfg.model.data_preprocessor.test_cfg == dict(size_divisor=32)


#: Parameters named in full that must (True) or must not (False) get weight decay 0 in the optimizer
#: that mmengine builds from the config; the full rule is in ``expected_no_decay``.
DECAY_SPOT_CHECKS = {
    'retinanet_pvt_t_fpn_1x_coco': {
        'backbone.stages.0.pos_embed': True,
        'backbone.stages.3.pos_embed': True,
        'backbone.stages.0.patch_embed.norm.weight': True,
        'backbone.stages.0.blocks.0.norm1.weight': True,
        'backbone.stages.0.blocks.1.norm2.bias': True,
        'backbone.stages.2.blocks.1.attn.norm.weight': True,  # the LayerNorm after the SR reduction
        'backbone.stages.0.patch_embed.proj.weight': False,
        'backbone.stages.0.blocks.0.attn.sr.weight': False,
        'backbone.stages.0.blocks.0.attn.q.bias': False,
        'backbone.stages.3.blocks.1.mlp.fc2.weight': False,
        'neck.lateral_convs.0.conv.weight': False,
        'bbox_head.retina_cls.bias': False,
    },
    'mask_rcnn_pvtv2_b2_li_fpn_1x_coco': {
        'backbone.stages.0.norm.weight': True,  # v2's LayerNorm after each stage
        'backbone.stages.3.blocks.2.attn.norm.bias': True,  # linear SRA normalises at every stage
        'backbone.stages.1.patch_embed.norm.bias': True,
        'backbone.stages.0.blocks.0.mlp.dwconv.weight': False,
        'backbone.stages.0.blocks.0.attn.sr.weight': False,
        'roi_head.bbox_head.fc_cls.weight': False,
        'roi_head.mask_head.convs.0.conv.weight': False,
    },
    'fpn_pvtv2_b0_512x512_40k_ade20k': {
        'backbone.stages.3.norm.bias': True,
        'backbone.stages.0.blocks.1.norm1.weight': True,
        # The head's BatchNorms decay, as every parameter does in the official recipe: the rule
        # covers the backbone's LayerNorms and position embeddings only (docs/recipes.md).
        'decode_head.scale_heads.0.0.bn.weight': False,
        'decode_head.conv_seg.weight': False,
    },
}


def expected_no_decay(model) -> set[str]:
    """Names of the parameters that should get no weight decay: those of every ``nn.LayerNorm``
    and every position embedding (a ``pos_embed`` attribute of a module), found by module type."""
    from torch import nn

    names = set()
    for module_name, module in model.named_modules():
        prefix = f'{module_name}.' if module_name else ''
        if isinstance(module, nn.LayerNorm):
            names.update(prefix + name for name, _ in module.named_parameters(recurse=False))
        if isinstance(getattr(module, 'pos_embed', None), nn.Parameter):
            names.add(prefix + 'pos_embed')
    return names


@pytest.mark.parametrize('name', list(DECAY_SPOT_CHECKS))
def test_no_weight_decay_on_norms_and_position_embeddings(name: str) -> None:
    """The optimizer that mmengine builds from a config gives decay 0 to exactly the backbone's
    LayerNorms and position embeddings, and the recipe's decay to everything else."""
    from mmengine.optim import build_optim_wrapper

    cfg = Config.fromfile(str(CONFIG_DIR / f'{name}.py'))
    weight_decay = RECIPES[name][1]
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = registry_of(cfg.default_scope).build(cfg.model)
        optimizer = build_optim_wrapper(model, cfg.optim_wrapper).optimizer
    decay = {id(p): group['weight_decay'] for group in optimizer.param_groups for p in group['params']}
    by_name = {param_name: decay[id(param)] for param_name, param in model.named_parameters()}
    for param_name, no_decay in DECAY_SPOT_CHECKS[name].items():
        assert by_name[param_name] == (0.0 if no_decay else weight_decay), param_name
    zero = expected_no_decay(model)
    assert zero, 'the model has no LayerNorm or position embedding'
    assert all(param_name.startswith('backbone.') for param_name in zero)
    for param_name, value in by_name.items():
        assert value == (0.0 if param_name in zero else weight_decay), param_name
