"""The release configs: every detector the official release trained, the paper's RetinaNet 3x
multi-scale, Semantic FPN PVTv2-b2_li, and DINO / Mask2Former on PVTv2-b2.

Each config is checked twice. Its recipe (schedule, optimizer, wrapper, batch, clipping, proposals,
training scales, backbone) against one table, ``RECIPES``, whose every row names its source. And one
training step on toy data: the config is built through mmdet's or mmseg's own registry, its training
pipeline reads the toy dataset through the real dataset class, and ``model.train_step`` runs with the
optimizer wrapper that mmengine builds from the config (parameter-wise rules and clipping included);
the step must give finite losses and move the backbone, the neck and the heads.

What the toy step cannot show: that a recipe reproduces its published number (we have no GPUs, COCO
or ADE20K); fp16 (AmpOptimWrapper needs a GPU: the fp16 recipes' toy step runs in bf16 with mmpvt's CPU
wrapper, what --amp picks on a CPU, or in fp32 where torch's bf16 gradient of a conv over a 1x1 map would
skip it); SyncBN across GPUs (reverted to BatchNorm as mmengine's Runner does without distribution);
full-size memory and speed (one block per backbone stage, every image size a tenth of the recipe's, so the
pipelines run their real transforms at about 64 pixels; 32 RoIs per image instead of 512, 20 Sparse R-CNN
proposals instead of 300 and 20 DINO queries instead of 900, whose full values the table checks); the
pretrained weights (not loaded); and the learning-rate schedule beyond its first step.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import torch
from helpers import VARIANTS
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.model import revert_sync_batchnorm
from mmengine.optim import build_optim_wrapper
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

import mmpvt

CONFIG_DIR = Path(__file__).resolve().parents[1] / 'configs'

MS_480_800 = tuple((side, 1333) for side in range(480, 801, 32))
#: The DETR / Sparse R-CNN augmentation of the official PVTv2 3x configs, as (transform, size) in order.
MS_CROP = (
    ('RandomChoiceResize', MS_480_800),
    ('RandomChoiceResize', ((400, 1333), (500, 1333), (600, 1333))),
    ('RandomCrop', (384, 600)),
    ('RandomChoiceResize', MS_480_800),
)
#: mmdet's DINO pipeline: MS_CROP with a longer side of up to 4200 before the crop.
DINO_MS_CROP = (MS_CROP[0], ('RandomChoiceResize', ((400, 4200), (500, 4200), (600, 4200))), *MS_CROP[2:])
RETINA_MS = (('RandomResize', ((1333, 640), (1333, 800))),)
DETR_MS = (('RandomChoiceResize', tuple((1333, side) for side in range(640, 801, 32))),)
ADE_512 = (('RandomResize', (2048, 512)), ('RandomCrop', (512, 512)))
#: mmseg's Mask2Former ADE20K pipeline: a shorter side of 256..1024 (longer <= 2048), then the 512 crop.
M2F_ADE_512 = (('RandomChoiceResize', tuple(int(512 * x * 0.1) for x in range(5, 21))), ('RandomCrop', (512, 512)))

RELEASE = 'whai362/PVT detection/configs'


class Recipe(NamedTuple):
    """One config's recipe; ``length`` is epochs (detection) or iterations (segmentation)."""

    length: int
    milestones: tuple[int, ...] | None  # None: poly decay
    lr: float
    weight_decay: float
    wrapper: str
    batch: int
    clip: float | None
    proposals: int | None  # Sparse R-CNN proposals, DETR / DINO / Mask2Former queries
    scales: tuple
    backbone: tuple[str, str, str, float]  # type, arch, pretrained file, drop_path_rate
    source: str


def v2(arch: str) -> tuple[str, str, str, float]:
    return ('PVTv2', arch, f'pretrained/pvt_v2_{arch}.pth', 0.1)


V1 = {
    't': ('PVT', 'tiny', 'pretrained/pvt_tiny.pth', 0.1),
    's': ('PVT', 'small', 'pretrained/pvt_small.pth', 0.1),
    'm': ('PVT', 'medium', 'pretrained/pvt_medium.pth', 0.0),  # the official pvt_medium / pvt_large leave
    'l': ('PVT', 'large', 'pretrained/pvt_large.pth', 0.0),  # drop_path_rate at the class default 0.0
}
AMP, FP32, CPU_AMP = 'AmpOptimWrapper', 'OptimWrapper', 'CpuAmpOptimWrapper'

#: name -> recipe. 3x = 36 epochs with lr x0.1 at 27 and 33. Sources: the release's config files
#: (whai362/PVT @ 38b6b49), mmdet 3.3 / mmseg 1.2 configs as installed, the PVT paper.
RECIPES: dict[str, Recipe] = {
    **{
        f'mask_rcnn_pvtv2_{arch}_fpn_3x_ms_coco': Recipe(
            36, (27, 33), 1e-4, 0.05, wrapper, 2, None, None, MS_CROP, v2(arch), f'{RELEASE}/{source}'
        )
        for arch, wrapper, source in (
            ('b2', FP32, 'mask_rcnn_pvt_v2_b2_fpn_3x_mstrain.py (no fp16 in this one)'),
            ('b2_li', AMP, 'mask_rcnn_pvt_v2_b2_li_fpn_3x_mstrain.py'),
        )
    },
    **{
        f'{head}_pvtv2_{arch}_fpn_3x_ms_coco': Recipe(
            36, (27, 33), 1e-4, 0.05, AMP, 2, None, None, MS_CROP, v2(arch), f'{RELEASE}/{head}_pvt_v2_*_3x_*fp16.py'
        )
        for head in ('cascade_mask_rcnn', 'atss', 'gfl')
        for arch in ('b2', 'b2_li')
    },
    **{
        f'sparse_rcnn_pvtv2_{arch}_fpn_300p_3x_ms_coco': Recipe(
            36, (27, 33), 2.5e-5 / 1.4, 1e-4, FP32, 1, 1.0, 300, MS_CROP, v2(arch), f'{RELEASE}/sparse_rcnn_pvt_v2_*'
        )
        for arch in ('b2', 'b2_li')
    },
    'detr_pvt_s_50e_coco': Recipe(
        50, (33,), 1e-4, 1e-4, FP32, 2, 0.1, 100, DETR_MS, V1['s'], f'{RELEASE}/detr_pvt_s_8x2_50ep_coco.py'
    ),
    'retinanet_pvt_s_fpn_1x_coco_640': Recipe(
        12,
        (8, 11),
        1e-4,
        1e-4,
        FP32,
        2,
        None,
        None,
        (('Resize', (1066, 640)),),
        V1['s'],
        f'{RELEASE}/retinanet_pvt_s_fpn_1x_coco_640.py',
    ),
    **{
        f'retinanet_pvt_{short}_fpn_3x_ms_coco': Recipe(
            36,
            (27, 33),
            1e-4 / 1.4 if short == 'l' else 1e-4,
            1e-4,
            FP32,
            1 if short == 'l' else 2,
            None,
            None,
            RETINA_MS,
            V1[short],
            'PVT paper 3x + MS setting; the 1x recipe of its size; scales of mmdet retinanet_r50_fpn_ms-640-800-3x',
        )
        for short in V1
    },
    'fpn_pvtv2_b2_li_512x512_40k_ade20k': Recipe(
        40000, None, 2e-4, 1e-4, FP32, 4, None, None, ADE_512, v2('b2_li'), 'whai362/PVTv2-Seg fpn_pvtv2_b2_li'
    ),
    'dino_pvtv2_b2_4scale_12e_coco': Recipe(
        12, (11,), 1e-4, 1e-4, FP32, 2, 0.1, 900, DINO_MS_CROP, v2('b2'), 'mmdet dino-4scale_r50_8xb2-12e_coco.py'
    ),
    'mask2former_pvtv2_b2_512x512_160k_ade20k': Recipe(
        160000,
        None,
        1e-4,
        0.05,
        FP32,
        2,
        0.01,
        100,
        M2F_ADE_512,
        v2('b2'),
        'mmseg mask2former_swin-t_8xb2-160k_ade20k-512x512.py',
    ),
}

#: The published result of each config, and where (README model zoo and metafile.yml carry the same).
PUBLISHED = {
    'mask_rcnn_pvtv2_b2_fpn_3x_ms_coco': 'release 47.8 / 43.1',
    'cascade_mask_rcnn_pvtv2_b2_fpn_3x_ms_coco': 'release 51.1 / 44.4',
    'cascade_mask_rcnn_pvtv2_b2_li_fpn_3x_ms_coco': 'release 50.9 / 44.0',
    'atss_pvtv2_b2_fpn_3x_ms_coco': 'release 49.9',
    'atss_pvtv2_b2_li_fpn_3x_ms_coco': 'release 48.9',
    'gfl_pvtv2_b2_fpn_3x_ms_coco': 'release 50.2',
    'gfl_pvtv2_b2_li_fpn_3x_ms_coco': 'release 49.2',
    'sparse_rcnn_pvtv2_b2_fpn_300p_3x_ms_coco': 'release 50.1',
    'sparse_rcnn_pvtv2_b2_li_fpn_300p_3x_ms_coco': 'release 48.9',
    'detr_pvt_s_50e_coco': 'release 34.7',
    'retinanet_pvt_s_fpn_1x_coco_640': 'release 38.7',
    'retinanet_pvt_s_fpn_3x_ms_coco': 'paper 42.2',
    'retinanet_pvt_m_fpn_3x_ms_coco': 'paper 43.2',
}


def load(name: str) -> Config:
    return Config.fromfile(str(CONFIG_DIR / f'{name}.py'))


def registry_of(scope: str):
    if scope == 'mmdet':
        from mmdet.registry import MODELS
    else:
        assert scope == 'mmseg', scope
        from mmseg.registry import MODELS
    return MODELS


def resize_steps(pipeline: list) -> tuple:
    """(transform, size) of every resize and crop of a training pipeline, in order, RandomChoice unrolled."""
    steps = []
    for step in pipeline:
        if step['type'] == 'RandomChoice':
            for branch in step['transforms']:
                steps.extend(resize_steps(branch))
        elif step['type'] in ('Resize', 'RandomResize', 'RandomChoiceResize'):
            size = step.get('scales', step.get('scale'))
            steps.append((step['type'], tuple(map(tuple, size)) if isinstance(size[0], (list, tuple)) else tuple(size)))
        elif step['type'] == 'RandomCrop':
            steps.append(('RandomCrop', tuple(step['crop_size'])))
    return tuple(steps)


def proposals(cfg: Config) -> int | None:
    model = cfg.model
    if 'rpn_head' in model and model.rpn_head.type == 'EmbeddingRPNHead':
        return model.rpn_head.num_proposals
    if 'num_queries' in model:
        return model.num_queries
    return model.get('decode_head', {}).get('num_queries')


def test_table_covers_the_release_configs() -> None:
    assert len(RECIPES) == 19
    for name in RECIPES:
        assert (CONFIG_DIR / f'{name}.py').is_file(), name
    assert set(PUBLISHED) <= set(RECIPES)


def test_recipes_md_shows_every_release_config_as_pinned() -> None:
    """docs/recipes.md has one row per config of the table above, with its lr, batch and length as pinned here."""
    doc = (CONFIG_DIR.parent / 'docs' / 'recipes.md').read_text()
    for name, recipe in RECIPES.items():
        (row,) = [line for line in doc.splitlines() if line.startswith(f'| `{name}` |')]
        cells = [cell.strip() for cell in row.split('|')[1:-1]]
        assert cells[1].startswith(f'{recipe.length:,} '), row
        assert cells[3].startswith(('fp16' if recipe.wrapper == AMP else 'fp32') + f', {recipe.batch}, '), row
        numerator, *divisor = cells[2].split(', ')[0].split(' / ')  # '1e-4' or '1e-4 / 1.4'
        assert float(numerator) / float(divisor[0] if divisor else 1) == pytest.approx(recipe.lr, rel=1e-12), row


def test_the_expected_configs_exist() -> None:
    """The 16 v1 configs, the 21 v2 ones (``VARIANTS``, checked in test_configs.py) and the 19 of the release's
    other detectors (and beyond) are all there, and nothing else at the top level."""
    assert len(VARIANTS) == 16 + 21 and len(RECIPES) == 19
    assert sorted(p.stem for p in CONFIG_DIR.glob('*.py')) == sorted([*VARIANTS, *RECIPES])


@pytest.mark.parametrize('name', list(RECIPES))
def test_recipe(name: str) -> None:
    recipe = RECIPES[name]
    cfg = load(name)
    assert cfg.custom_imports == dict(imports=['mmpvt'], allow_failed_imports=False)
    length = cfg.train_cfg.get('max_epochs', cfg.train_cfg.get('max_iters'))
    assert length == recipe.length
    schedulers = {step.type: step for step in cfg.param_scheduler}
    if recipe.milestones is None:
        poly = schedulers['PolyLR']
        assert (poly.power, poly.end) == (0.9, recipe.length)
    else:
        steps = schedulers['MultiStepLR']
        assert (tuple(steps.milestones), steps.gamma, steps.end) == (recipe.milestones, 0.1, recipe.length)
    warmup = schedulers.get('LinearLR')
    if name.startswith(('detr', 'dino')):
        assert warmup is None  # neither the release's DETR nor mmdet's DINO warms up
    elif recipe.milestones is not None:
        assert (warmup.start_factor, warmup.end, warmup.by_epoch) == (0.001, 500, False)
    wrapper = cfg.optim_wrapper
    assert wrapper.type == recipe.wrapper
    assert wrapper.optimizer.type == 'AdamW' and 'momentum' not in wrapper.optimizer
    assert wrapper.optimizer.lr == pytest.approx(recipe.lr, rel=1e-12)
    assert wrapper.optimizer.weight_decay == recipe.weight_decay
    clip = wrapper.get('clip_grad')
    assert (clip.max_norm if clip else None) == recipe.clip
    assert cfg.train_dataloader.batch_size == recipe.batch
    assert cfg.auto_scale_lr.base_batch_size == 8 * recipe.batch
    assert proposals(cfg) == recipe.proposals
    assert resize_steps(cfg.train_dataloader.dataset.pipeline) == recipe.scales
    backbone_type, arch, checkpoint, _ = recipe.backbone
    backbone = cfg.model.backbone
    assert (backbone.type, backbone.arch) == (backbone_type, arch)
    assert backbone.init_cfg == dict(type='Pretrained', checkpoint=checkpoint)
    assert 'embed_norm_eps' not in backbone  # the official 1e-5, the backbone's default


@pytest.mark.parametrize('name', list(RECIPES))
def test_backbone_fits_and_drop_path(name: str) -> None:
    """The full-size model builds; what consumes the backbone takes its channels; drop path as recipe."""
    cfg = load(name)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = registry_of(cfg.default_scope).build(cfg.model)
    backbone = model.backbone
    assert isinstance(backbone, mmpvt.PVT)
    consumer = cfg.model.neck if 'neck' in cfg.model else cfg.model.decode_head
    assert list(consumer.in_channels) == list(backbone.out_channels)
    assert backbone.stages[-1].blocks[-1].drop_path.drop_prob == pytest.approx(RECIPES[name].backbone[3], abs=1e-7)


def test_parameter_groups_of_the_transformer_heads() -> None:
    """Mask2Former: PVTv2's norms keep the backbone's lr x0.1 and get no decay; DETR: backbone lr x0.1."""
    for name, expected in (
        (
            'mask2former_pvtv2_b2_512x512_160k_ade20k',
            {
                'backbone.stages.2.blocks.5.norm1.weight': (0.1, 0.0),
                'backbone.stages.0.blocks.0.attn.norm.bias': (0.1, 0.0),
                'backbone.stages.3.patch_embed.norm.weight': (0.1, 0.0),
                'backbone.stages.1.norm.weight': (0.1, 0.0),
                'backbone.stages.0.blocks.0.attn.q.weight': (0.1, 1.0),
                'decode_head.query_embed.weight': (1.0, 0.0),
                'decode_head.cls_embed.weight': (1.0, 1.0),
            },
        ),
        ('detr_pvt_s_50e_coco', {'backbone.stages.0.pos_embed': (0.1, 1.0), 'bbox_head.fc_cls.weight': (1.0, 1.0)}),
    ):
        cfg = load(name)
        with DefaultScope.overwrite_default_scope(cfg.default_scope):
            model = registry_of(cfg.default_scope).build(cfg.model)
            optimizer = build_optim_wrapper(model, cfg.optim_wrapper).optimizer
        lr, decay = cfg.optim_wrapper.optimizer.lr, cfg.optim_wrapper.optimizer.weight_decay
        groups = {id(p): group for group in optimizer.param_groups for p in group['params']}
        params = dict(model.named_parameters())
        for param_name, (lr_mult, decay_mult) in expected.items():
            group = groups[id(params[param_name])]
            assert group['lr'] == pytest.approx(lr * lr_mult), param_name
            assert group['weight_decay'] == pytest.approx(decay * decay_mult), param_name


def shrink(node: Any, factor: float) -> Any:
    """Every image size of a pipeline (``scale``, ``scales``, ``crop_size``) times ``factor``."""
    if isinstance(node, dict):
        return {
            key: scale_sizes(value, factor) if key in ('scale', 'scales', 'crop_size') else shrink(value, factor)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [shrink(item, factor) for item in node]
    return node


def scale_sizes(size: Any, factor: float) -> Any:
    if isinstance(size, (list, tuple)):
        return type(size)(scale_sizes(item, factor) for item in size)
    return max(1, round(size * factor))


def toy_config(name: str, toy_coco: Path, toy_ade: Path) -> Config:
    """The config at CPU size: one block per stage, sizes / 10, the toy dataset, no pretrained file."""
    cfg = load(name)
    cfg.model.backbone.depths = (1, 1, 1, 1)
    cfg.model.backbone.init_cfg = None
    loader = cfg.train_dataloader
    loader.num_workers, loader.persistent_workers = 0, False
    loader.dataset.pipeline = shrink(loader.dataset.pipeline, 0.1)
    if cfg.default_scope == 'mmseg':
        loader.dataset.data_root = str(toy_ade / 'ADEChallengeData2016')
        cfg.model.data_preprocessor.size = (64, 64)
    else:
        loader.dataset.data_root = str(toy_coco)
        loader.dataset.metainfo = dict(classes=('circle', 'square', 'triangle', 'star'))
    if cfg.optim_wrapper.type == AMP:
        # fp16 needs a GPU; on a CPU, --amp means mmpvt's bfloat16 wrapper, and the toy step runs with it (the
        # two-stage detectors' NMS and RoIAlign in fp32 islands). Not where the FPN has extra convs: at toy size
        # they run over 1x1 maps, whose bf16 weight gradient torch 2.13 gets wrong at times (docs/reliability.md):
        # the scaler skips the step and nothing moves. Those run in fp32.
        cfg.optim_wrapper.type = FP32 if cfg.model.neck.get('add_extra_convs') else CPU_AMP
        cfg.optim_wrapper.pop('dtype', None)
    if 'rpn_head' in cfg.model and cfg.model.rpn_head.type == 'EmbeddingRPNHead':
        cfg.model.rpn_head.num_proposals = 20  # 300 proposals x 6 stages cost a loaded CPU 15 s a step
    rcnn = cfg.model.get('train_cfg', {}).get('rcnn') or []
    for stage in rcnn if isinstance(rcnn, list) else [rcnn]:
        if 'num' in stage.get('sampler', {}):
            stage.sampler.num = 32  # RoIs per image: 512 through Cascade's 4-conv heads cost a TFLOP a step
    if 'num_queries' in cfg.model and cfg.model.type == 'DINO':
        cfg.model.num_queries = 20  # DINO picks its queries among the encoder's tokens: 85 at 64 pixels
    return cfg


def moved(before: dict[str, torch.Tensor], model: torch.nn.Module, prefix: str) -> bool:
    return any(
        not torch.equal(before[name], param.detach())
        for name, param in model.named_parameters()
        if name.startswith(prefix) and name in before
    )


@pytest.fixture
def toy_step_env() -> Iterator[None]:
    """One torch thread and mmengine's logger at WARNING, both restored after the test.

    The toy models are tiny: two OpenMP threads on a shared, loaded 2-core machine made a step 20 times
    slower than one thread. ``init_weights`` logs every parameter's initialisation at INFO.
    """
    logger = MMLogger.get_current_instance()
    level, threads = logger.level, torch.get_num_threads()
    logger.setLevel(logging.WARNING)
    torch.set_num_threads(1)
    try:
        yield
    finally:
        logger.setLevel(level)
        torch.set_num_threads(threads)


@pytest.mark.timeout(120)
@pytest.mark.parametrize('name', list(RECIPES))
def test_one_training_step_on_toy_data(name: str, toy_coco: Path, toy_ade: Path, toy_step_env: None) -> None:
    torch.manual_seed(0)
    cfg = toy_config(name, toy_coco, toy_ade)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = revert_sync_batchnorm(registry_of(cfg.default_scope).build(cfg.model))
        model.init_weights()
        optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
        batch = next(iter(Runner.build_dataloader(cfg.train_dataloader, seed=0)))
        before = {name: param.detach().clone() for name, param in model.named_parameters() if param.requires_grad}
        model.train()
        losses = model.train_step(batch, optim_wrapper)
    assert losses, name
    for key, value in losses.items():
        assert math.isfinite(float(value)), f'{name}: {key} = {value}'
    parts = ['backbone.', 'neck.' if 'neck' in cfg.model else None]
    parts += [f'{head}.' for head in ('rpn_head', 'roi_head', 'bbox_head', 'decode_head') if head in cfg.model]
    for prefix in filter(None, parts):
        assert moved(before, model, prefix), f'{name}: no parameter under {prefix} changed'
