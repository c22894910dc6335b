"""Fixtures and hooks of the tests: toy data in tmp_path, mmengine's default scope and torch's safe globals
restored after each test. Helper functions and constants are in ``helpers.py``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers import TINY, save_checkpoint, small_config
from mmengine.registry import DefaultScope

from mmpvt.datasets import make_toy_ade, make_toy_coco


@pytest.fixture(scope='session')
def toy_coco(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny toy COCO: 8 training and 4 validation images of 64x64 pixels."""
    return make_toy_coco(tmp_path_factory.mktemp('toy_coco'), num_train=8, num_val=4, size=TINY)


@pytest.fixture(scope='session')
def toy_ade(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny toy ADE20K: 8 training and 4 validation images of 64x64 pixels."""
    return make_toy_ade(tmp_path_factory.mktemp('toy_ade'), num_train=8, num_val=4, size=TINY)


@pytest.fixture(scope='module')
def small_detector(toy_coco: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(config, checkpoint) of an untrained small toy RetinaNet-PVT-T (helpers' ``small_config``).

    It keeps its 20 best boxes per image: an untrained detector scores below the default threshold.
    """
    folder = tmp_path_factory.mktemp('small_detector')
    small = small_config(folder / 'small.py', toy_coco)
    config, checkpoint = folder / 'config.py', folder / 'model.pth'
    config.write_text(f"_base_ = '{small}'\nmodel = dict(test_cfg=dict(score_thr=0.0, max_per_img=20))\n")
    save_checkpoint(config, checkpoint)
    return config, checkpoint


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
