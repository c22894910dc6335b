"""tools/dist_train.sh with 2 CPU processes (gloo) trains, saves checkpoints, logs the losses of a
1-process run with the same total batch and seed, and takes the same optimizer steps: DDP averages
the two halves' gradients (plain SGD, no momentum, constant lr: a step is -lr times the gradient, so
summed gradients would make it twice as long; an Adam-like optimizer would hide that).

What makes the two runs comparable: the same seed (so the same initial weights, and the same
sampler permutation: the 2 ranks take its items 0, 2 and 1, 3, the single process items 0..3),
a pipeline without random augmentation, no dropout or drop path, GroupNorm instead of
BatchNorm (whose batch statistics depend on the per-process batch), a loss averaged over a
fixed number of pixels per image, and logged losses averaged over ranks (RankMeanLossHook).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO, TINY, TOY_CONFIGS, checkout_env

from mmpvt.checkpoint import load_file

pytestmark = pytest.mark.slow

TINY_CONFIG = """
_base_ = '{base}'
data_root = '{data_root}'
pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
model = dict(
    data_preprocessor=dict(size=({size}, {size})),
    backbone=dict(drop_path_rate=0.0),
    decode_head=dict(dropout_ratio=0.0, norm_cfg=dict(type='GN', num_groups=32, requires_grad=True)),
)
optim_wrapper = dict(_delete_=True, type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01, momentum=0.0))
param_scheduler = []
loader = dict(num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root, pipeline=pipeline))
train_dataloader = dict(batch_size={batch_size}, **loader)
val_dataloader = dict(batch_size=2, **loader)
test_dataloader = val_dataloader
train_cfg = dict(max_iters=2, val_interval=1000)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
randomness = dict(seed=0)
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def write_config(path: Path, data_root: Path, batch_size: int) -> Path:
    base = TOY_CONFIGS / 'fpn_pvt_t_toy_ade.py'
    root = data_root / 'ADEChallengeData2016'
    path.write_text(TINY_CONFIG.format(base=base, data_root=root, batch_size=batch_size, size=TINY))
    return path


def logged_losses(work_dir: Path) -> dict[int, float]:
    """iteration -> logged loss, from the Runner's json log."""
    (log,) = work_dir.glob('*/vis_data/scalars.json')
    records = [json.loads(line) for line in log.read_text().splitlines()]
    return {r['iter']: r['loss'] for r in records if 'loss' in r}


def weights(checkpoint: Path) -> dict[str, torch.Tensor]:
    return {k: v.float() for k, v in load_file(checkpoint)['state_dict'].items() if v.is_floating_point()}


def run(command: list[str], **env: str) -> None:
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, env=checkout_env(**env))
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]


def test_two_cpu_processes_log_the_loss_of_one(toy_ade: Path, tmp_path: Path) -> None:
    single = write_config(tmp_path / 'single.py', toy_ade, batch_size=4)
    double = write_config(tmp_path / 'double.py', toy_ade, batch_size=2)

    run([sys.executable, 'tools/train.py', str(single), '--work-dir', str(tmp_path / 'single')])
    run(
        ['bash', 'tools/dist_train.sh', str(double), '2', '--work-dir', str(tmp_path / 'double')],
        PORT=str(free_port()),
        PYTHON=sys.executable,
        OMP_NUM_THREADS='1',
    )

    one, two = logged_losses(tmp_path / 'single'), logged_losses(tmp_path / 'double')
    assert 1 in one and 1 in two
    assert two[1] == pytest.approx(one[1], abs=1e-4)
    assert two[2] == pytest.approx(one[2], abs=1e-4)
    # DDP averaged the two halves' gradients into the single process's update: the same second step
    single = [weights(tmp_path / 'single' / f'iter_{i}.pth') for i in (1, 2)]
    double = [weights(tmp_path / 'double' / f'iter_{i}.pth') for i in (1, 2)]
    assert single[0].keys() == double[0].keys()
    moved = 0
    for key, before in single[0].items():
        step = single[1][key] - before
        torch.testing.assert_close(double[0][key], before, rtol=0, atol=1e-3 * step.abs().max() + 1e-7, msg=key)
        torch.testing.assert_close(double[1][key] - double[0][key], step, rtol=0.02, atol=1e-7, msg=key)
        moved += bool(step.abs().max() > 1e-5)
    assert moved > len(single[0]) // 2  # the steps are long enough to tell a sum from a mean
