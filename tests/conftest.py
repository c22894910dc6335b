"""Shared helpers of the end-to-end tests: toy data in tmp_path and toy configs pointed at it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import DefaultScope

from mmpvt.datasets import make_toy_ade, make_toy_coco

REPO = Path(__file__).resolve().parents[1]
TOY_CONFIGS = REPO / 'configs' / 'toy'
TINY = 64  # image side of the test datasets


def checkout_env(*, extra_path: tuple[str | os.PathLike[str], ...] = (), **overrides: str) -> dict[str, str]:
    """The environment for a subprocess that must import this checkout's mmpvt.

    ``import mmpvt`` would otherwise resolve through the installed (editable) package, which may point at
    another clone. The repository root goes first on PYTHONPATH, then ``extra_path``, then what was inherited.

    Args:
        extra_path: more folders for PYTHONPATH, after the repository root.
        **overrides: variables set on top of this process's environment.
    """
    env = {**os.environ, **overrides}
    inherited = [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p]
    env['PYTHONPATH'] = os.pathsep.join([str(REPO), *map(str, extra_path), *inherited])
    return env


@pytest.fixture(scope='session')
def toy_coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny toy COCO: 8 training and 4 validation images of 64x64 pixels."""
    return make_toy_coco(tmp_path_factory.mktemp('toy_coco'), num_train=8, num_val=4, size=TINY)


@pytest.fixture(scope='session')
def toy_ade(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny toy ADE20K: 8 training and 4 validation images of 64x64 pixels."""
    return make_toy_ade(tmp_path_factory.mktemp('toy_ade'), num_train=8, num_val=4, size=TINY)


@pytest.fixture(autouse=True)
def default_scope_as_before() -> Iterator[None]:
    """Each test leaves mmengine's default scope as it found it.

    A Runner built in-process (launch.train, the learning test) makes its scope, say ``mmseg``, the
    current one for the rest of the process; a later ``mmdet.registry.MODELS.build`` then looks in
    mmseg's registry and fails. mmengine has no API to drop a scope, so its instance table is restored.
    """
    saved = list(DefaultScope._instance_dict.items())
    try:
        yield
    finally:
        DefaultScope._instance_dict.clear()
        DefaultScope._instance_dict.update(saved)


@pytest.fixture
def no_safe_globals() -> Iterator[None]:
    """torch's process-wide weights-only allow-list, emptied for the test and restored after it.

    Other tests (anything that runs ``launch.train`` in-process) add mmengine's types to it; a test of what
    mmpvt's own loading allows must not pass thanks to them.
    """
    saved = torch.serialization.get_safe_globals()
    torch.serialization.clear_safe_globals()
    try:
        yield
    finally:
        torch.serialization.clear_safe_globals()
        torch.serialization.add_safe_globals(saved)


def point_to_data(cfg: Config, data_root: Path) -> Config:
    """Make every dataloader and the COCO evaluators of a toy config read ``data_root`` (TINY-pixel images)."""
    root = str(data_root / 'ADEChallengeData2016') if cfg.default_scope == 'mmseg' else str(data_root)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = root
        cfg[loader].num_workers = 0
        cfg[loader].persistent_workers = False
        for transform in cfg[loader].dataset.pipeline:
            if transform.type == 'Resize':
                transform.scale = (TINY, TINY)
    for evaluator in ('val_evaluator', 'test_evaluator'):
        if 'ann_file' in cfg[evaluator]:
            cfg[evaluator].ann_file = str(data_root / 'annotations' / 'instances_val2017.json')
    if cfg.default_scope == 'mmseg':
        cfg.model.data_preprocessor.size = (TINY, TINY)
    return cfg


def toy_config(name: str, data_root: Path, work_dir: Path) -> Config:
    """``configs/toy/NAME.py`` reading ``data_root`` and writing to ``work_dir``."""
    cfg = point_to_data(Config.fromfile(str(TOY_CONFIGS / f'{name}.py')), data_root)
    cfg.work_dir = str(work_dir)
    cfg.launcher = 'none'
    return cfg


def logged_records(work_dir: Path) -> list[dict]:
    """Every record of the Runner's ``scalars.json`` logs, over every run (timestamped folder) of a work dir."""
    return [
        json.loads(line)
        for log in sorted(work_dir.glob('*/vis_data/scalars.json'))
        for line in log.read_text().splitlines()
    ]


MAX_EPOCHS = 5  # 8 images / batch 2 = 4 iterations per epoch: 20 iterations

#: Toy RetinaNet-PVT-T made small for a test: depths (1, 1, 1, 1), 32-channel FPN and head,
#: 64-pixel images, a checkpoint every epoch, no validation.
SMALL_CONFIG = """
_base_ = '{base}'
data_root = '{data_root}/'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(64, 64), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
loader = dict(num_workers=0, persistent_workers=False)
train_dataloader = dict(batch_size=2, **loader, dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(batch_size=2, **loader, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator
model = dict(
    backbone=dict(depths=(1, 1, 1, 1)),
    neck=dict(out_channels=32),
    bbox_head=dict(in_channels=32, feat_channels=32, stacked_convs=1),
    data_preprocessor=dict(pad_size_divisor=32),
)
max_epochs = {max_epochs}
train_cfg = dict(max_epochs=max_epochs, val_begin=1000)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=8),
    dict(type='CosineAnnealingLR', eta_min=1e-5, begin=0, end=max_epochs, by_epoch=True, convert_to_iter_based=True),
]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
randomness = dict(seed=0, deterministic=True)
"""


def small_config(path: Path, data_root: Path, max_epochs: int = MAX_EPOCHS) -> Path:
    """The small toy RetinaNet config reading ``data_root``, written to ``path``."""
    base = TOY_CONFIGS / 'retinanet_pvt_t_fpn_toy_coco.py'
    path.write_text(SMALL_CONFIG.format(base=base, data_root=data_root, max_epochs=max_epochs))
    return path
