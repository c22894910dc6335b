"""Shared helpers of the end-to-end tests: toy data in tmp_path and toy configs pointed at it."""

from __future__ import annotations

from pathlib import Path

import pytest
from mmengine.config import Config

from mmpvt.apis import make_toy_ade, make_toy_coco

REPO = Path(__file__).resolve().parents[1]
TOY_CONFIGS = REPO / 'configs' / 'toy'
TINY = 64  # image side of the test datasets


@pytest.fixture(scope='session')
def toy_coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny toy COCO: 8 training and 4 validation images of 64x64 pixels."""
    return make_toy_coco(tmp_path_factory.mktemp('toy_coco'), num_train=8, num_val=4, size=TINY)


@pytest.fixture(scope='session')
def toy_ade(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny toy ADE20K: 8 training and 4 validation images of 64x64 pixels."""
    return make_toy_ade(tmp_path_factory.mktemp('toy_ade'), num_train=8, num_val=4, size=TINY)


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
