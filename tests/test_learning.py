"""Training learns: a short run of a small Semantic FPN-PVT-T on a small toy ADE20K lowers its loss and raises its
validation accuracy and mIoU far above the untrained model's, by margins a broken loss (one that ignores the
labels or climbs) or a frozen model (no step reaches the weights) cannot reach."""

from __future__ import annotations

import statistics
from pathlib import Path

import pytest
from helpers import TINY, logged_records, save_checkpoint, toy_config

from mmpvt.datasets import make_toy_ade
from mmpvt.launch import main as launch

pytestmark = pytest.mark.slow

ITERS = 80


@pytest.mark.usefixtures('no_safe_globals')
def test_semantic_fpn_learns_the_toy_shapes(tmp_path: Path) -> None:
    data = make_toy_ade(tmp_path / 'data', num_train=32, num_val=8, size=TINY)
    cfg = toy_config('fpn_pvt_t_toy_ade', data, tmp_path / 'train')
    # Semantic FPN-PVT-T made small: one block per stage, 64-channel FPN and head
    cfg.model.backbone.depths = (1, 1, 1, 1)
    cfg.model.neck.out_channels = cfg.model.decode_head.channels = 64
    cfg.model.decode_head.in_channels = [64] * 4
    cfg.optim_wrapper.optimizer.lr = 2e-3
    cfg.train_dataloader.batch_size = 4
    cfg.train_cfg.max_iters = cfg.train_cfg.val_interval = cfg.default_hooks.checkpoint.interval = ITERS
    cfg.param_scheduler[0].end = 10
    cfg.param_scheduler[1].update(begin=10, end=ITERS)
    cfg.default_hooks.logger.interval = 1
    config = tmp_path / 'config.py'
    cfg.dump(str(config))

    untrained = tmp_path / 'untrained.pth'
    save_checkpoint(config, untrained)
    before = launch.test([str(config), str(untrained), '--work-dir', str(tmp_path / 'before')])
    after = launch.train([str(config)])

    losses = [record['loss'] for record in logged_records(tmp_path / 'train') if 'loss' in record]
    assert len(losses) == ITERS
    first, last = statistics.mean(losses[:10]), statistics.mean(losses[-10:])
    print(f'loss {first:.3f} -> {last:.3f}, mIoU {before["mIoU"]:.1f} -> {after["mIoU"]:.1f}')
    # untrained: about 4.8 and aAcc 0 (a class absent from the data everywhere); a frozen model stays there, a
    # loss blind to the labels does not get the pixels right. After 80 steps: about 0.4 and aAcc 87 (the "wall"
    # background; the shapes take longer, see docs/learning_run.md).
    assert last < 0.25 * first
    assert after['aAcc'] > max(80.0, before['aAcc'] + 50.0)
    assert after['mIoU'] > before['mIoU'] + 10.0
