"""Training and testing through the user's tools on the GPU: ``tools/train.py`` with ``--amp`` (fp16 and
bf16), a one-process ``tools/dist_train.sh CONFIG 1`` (NCCL, mmengine's DDP wrapper, our rank hooks), and
RetinaNet once mmcv's CUDA ops exist; each then ``tools/test.py`` (or ``dist_test.sh``) on its checkpoint.

What a run is judged on, read from what every run of its kind leaves behind:

* the Runner's ``scalars.json``: iterations reached, every logged loss finite;
* for ``--amp``, the checkpoint's loss scaler (``optimizer.loss_scaler`` of mmengine's AmpOptimWrapper,
  ``optimizer.cpu_amp_loss_scaler`` of ours): torch's GradScaler starts at 2^16 (ours at 1), halves on every
  skipped step and grows only after 2000 good steps in a row, so below 2000 iterations
  ``log2(initial / scale)`` is the number of skipped steps and ``_growth_tracker`` the good steps since the
  last one; a skip after the warm-up fails the check;
* the test tool's ``Epoch(test)`` (or ``Iter(test)``) line: the metrics exist.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .build import tail
from .report import Check

#: Where each AMP wrapper keeps its GradScaler state in the checkpoint's ``optimizer``, and the scale it
#: starts from: mmengine's AmpOptimWrapper (float16) 2^16, mmpvt's CpuAmpOptimWrapper (bfloat16) 1.
SCALER_KEYS = {'loss_scaler': 2.0**16, 'cpu_amp_loss_scaler': 1.0}
GRADSCALER_GROWTH_INTERVAL = 2000
WARMUP_ITERS = 10  # skipped fp16 steps while the scale settles are expected here, not after


@dataclass
class Run:
    """One training run and its test: the tool, the config, the options that size it."""

    name: str
    config: str
    data: tuple[str, str]  # (make_toy_data kind, root)
    options: list[str]
    checkpoint: str
    metric: str  # the test metric that must be there
    amp: str | None = None  # None, 'float16' or 'bfloat16'
    gpus: int = 0  # 0: tools/train.py; n: tools/dist_train.sh CONFIG n
    extra_log_pattern: str = ''  # a line the training log must hold (the NCCL backend)
    test_options: list[str] = field(default_factory=list)


def seg_options(iters: int, subset: int | None) -> list[str]:
    """``iters`` iterations, a checkpoint at the end, no validation during training (the test tool does it)."""
    opts = [f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters + 1}']
    opts += [f'default_hooks.checkpoint.interval={iters}', f'default_hooks.logger.interval={max(1, min(10, iters))}']
    return opts + subset_options(subset)


def det_options(epochs: int, subset: int | None) -> list[str]:
    """``epochs`` epochs, a checkpoint at the end, no validation during training (the test tool does it)."""
    opts = [f'train_cfg.max_epochs={epochs}', f'train_cfg.val_interval={epochs + 1}']
    return [*opts, f'default_hooks.checkpoint.interval={epochs}', *subset_options(subset)]


def subset_options(subset: int | None, *, cfg_options: bool = False) -> list[str]:
    """The first ``subset`` images of each split (the CPU rehearsal), through mmengine's ``indices``; with
    ``cfg_options``, as a whole ``--cfg-options`` argument list (for the test tool)."""
    if subset is None:
        return []
    opts = [f'{split}_dataloader.dataset.indices={subset}' for split in ('train', 'val', 'test')]
    return ['--cfg-options', *opts] if cfg_options else opts


def loss_summary(work_dir: Path) -> dict[str, Any]:
    """Iterations and losses from the Runner's scalars.json."""
    records = [
        json.loads(line)
        for log in sorted(work_dir.glob('*/vis_data/scalars.json'))
        for line in log.read_text().splitlines()
        if line.strip()
    ]
    train = [r for r in records if 'loss' in r]
    losses = [r['loss'] for r in train]
    return dict(
        iters=max((r.get('iter', 0) for r in train), default=0),
        first=losses[0] if losses else None,
        last=losses[-1] if losses else None,
        finite=bool(losses) and all(math.isfinite(v) for v in losses),
    )


def skipped_steps(scaler: dict[str, Any], iters: int, init_scale: float = 2.0**16) -> dict[str, Any]:
    """Skipped steps of an AMP run from its GradScaler state (see the module's docstring)."""
    if not scaler or 'scale' not in scaler:
        return dict(error='the checkpoint has no loss scaler state (not an AMP optim wrapper run?)')
    if iters >= GRADSCALER_GROWTH_INTERVAL or scaler.get('growth_interval', 2000) != GRADSCALER_GROWTH_INTERVAL:
        return dict(error=f'{iters} iterations: the scale may have grown, skips cannot be counted from it')
    skipped = round(math.log2(init_scale / float(scaler['scale'])))
    good_since = int(scaler.get('_growth_tracker', 0))
    last = iters - good_since if skipped else None
    return dict(skipped=skipped, last_skip_iter=last, scale=float(scaler['scale']))


def late_skip(skips: dict[str, Any]) -> bool:
    """A step skipped after the first ``WARMUP_ITERS`` iterations (the scale should have settled by then)."""
    return skips.get('last_skip_iter') is not None and skips['last_skip_iter'] > WARMUP_ITERS


def test_metrics(stdout: str) -> dict[str, float]:
    """``key: number`` pairs of mmengine's ``Epoch(test)`` line (``Iter(test)`` for iteration-based runs)."""
    lines = [line for line in stdout.splitlines() if re.search(r'(Epoch|Iter)\(test\)', line)]
    return {k: float(v) for k, v in re.findall(r'(\S+): (-?\d+(?:\.\d+)?)\b', lines[-1])} if lines else {}


SCALER_CODE = """import json, sys
from mmpvt.checkpoint import load_file
optimizer = load_file(sys.argv[1]).get('optimizer', {})
print(json.dumps({k: optimizer[k] for k in sys.argv[2:] if k in optimizer}, default=float))
"""


def read_scaler(checkpoint: Path, env: dict[str, str]) -> tuple[dict[str, Any], float]:
    """The checkpoint's loss scaler state and the scale it started from, read with mmpvt's safe loader (in a
    subprocess of the run's environment); ({}, 1) when it has none."""
    cmd = [sys.executable, '-c', SCALER_CODE, str(checkpoint), *SCALER_KEYS]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    found = json.loads(out.stdout) if out.returncode == 0 and out.stdout.strip() else {}
    for key, init in SCALER_KEYS.items():
        if key in found:
            return found[key], init
    return {}, 1.0


ToolRunner = Callable[[str, list[str], Path, float], tuple[bool, str]]


def run_training(run: Run, work_root: Path, tool: ToolRunner, env: dict[str, str], repo: Path, stage: str) -> Check:
    """Train, then test the checkpoint; one check with the figures."""
    start = time.monotonic()
    kind, root = run.data
    if not (repo / root).exists():
        subprocess.run([sys.executable, 'tools/dataset_converters/make_toy_data.py', kind, root], env=env, cwd=repo)
    work = work_root / re.sub(r'[^A-Za-z0-9_.-]+', '_', run.name)
    if work.exists():
        import shutil

        shutil.rmtree(work)
    work.mkdir(parents=True)
    py = sys.executable
    if run.gpus:
        train = ['bash', 'tools/dist_train.sh', run.config, str(run.gpus)]
    else:
        train = [py, 'tools/train.py', run.config]
    train += (['--amp'] if run.amp else []) + (['--amp-dtype', run.amp] if run.amp else [])
    train += ['--work-dir', str(work), '--cfg-options', *run.options]
    ok, out = tool('train', train, work / 'train.log', 300)
    losses = loss_summary(work)
    checkpoint = work / run.checkpoint
    detail: dict[str, Any] = dict(losses)
    problems = []
    if not ok:
        problems.append(f'training failed: {tail(out)}')
    elif not checkpoint.exists():
        problems.append(f'no {run.checkpoint} in {work}')
    if ok and not losses['finite']:
        problems.append('a logged loss is not finite')
    if run.extra_log_pattern and ok and not re.search(run.extra_log_pattern, out):
        problems.append(f'the log has no line matching {run.extra_log_pattern!r}')
    figure = [f'{losses["iters"]} its, loss {fmt(losses["first"])} → {fmt(losses["last"])}']
    if run.amp and checkpoint.exists():
        state, init_scale = read_scaler(checkpoint, env)
        skips = skipped_steps(state, losses['iters'], init_scale)
        detail.update(skips)
        if 'error' in skips:
            problems.append(skips['error'])
        else:
            figure.append(
                f'{skips["skipped"]} skipped steps'
                + (f' (last at iteration {skips["last_skip_iter"]})' if skips['skipped'] else '')
            )
            if late_skip(skips):
                problems.append(f'a step was skipped after the first {WARMUP_ITERS} iterations')
    if ok and checkpoint.exists():
        if run.gpus:
            test = ['bash', 'tools/dist_test.sh', run.config, str(checkpoint), str(run.gpus)]
        else:
            test = [py, 'tools/test.py', run.config, str(checkpoint)]
        test += ['--work-dir', str(work / 'test'), *run.test_options]
        test_ok, test_out = tool('test', test, work / 'test.log', 180)
        metrics = test_metrics(test_out)
        detail.update(metrics)
        if not test_ok:
            problems.append(f'test failed: {tail(test_out)}')
        elif run.metric not in metrics and 'results of the whole dataset is empty' in test_out:
            problems.append(f'no {run.metric}: the model detected nothing in the test set (too little training?)')
        elif run.metric not in metrics:
            problems.append(f'the test printed no {run.metric}')
        shown = {k: v for k, v in metrics.items() if k.endswith(('mAP', 'mIoU', 'aAcc'))}
        figure.append(', '.join(f'{k}={v:g}' for k, v in shown.items()) or 'no metrics')
    seconds = time.monotonic() - start
    figure.append(f'{seconds:.0f} s')
    verdict = 'fail' if problems else 'pass'
    text = '; '.join(figure + problems)
    return Check(stage, run.name, verdict, text, round(seconds, 1), detail)


def fmt(value: float | None) -> str:
    return 'none' if value is None else f'{value:.3f}'
