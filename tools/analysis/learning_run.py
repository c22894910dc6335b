"""Record how fast the toy configs learn on this machine; write docs/learning_run.{json,md}.

Usage: python tools/analysis/learning_run.py [--only retinanet|fpn] [--out-dir docs]

Trains configs/toy/retinanet_pvt_t_fpn_toy_coco.py (12 epochs instead of the demo's 4) and
configs/toy/fpn_pvt_t_toy_ade.py from scratch (writing the toy data first if needed),
validates along the way, and records after each validation the training time so far
(validation excluded), the metrics and the machine's load average. Training stops when the
time budget is spent (then one last validation). Targets: box mAP@0.5 >= 0.5 within
15 minutes of training (RetinaNet), mIoU >= 85 within 10 minutes (Semantic FPN).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch
from mmengine.config import Config
from mmengine.hooks import Hook

from mmpvt.checkpoint import allow_mmengine_checkpoints
from mmpvt.datasets import make_toy_ade, make_toy_coco
from mmpvt.launch.entry import run_tool
from mmpvt.launch.main import build_runner

REPO = Path(__file__).resolve().parents[2]

# name -> (config, toy data kind, data dir, metric, target, budget in minutes, validation interval)
RUNS = {
    'retinanet': ('retinanet_pvt_t_fpn_toy_coco', 'coco', 'data/toy_coco', 'coco/bbox_mAP_50', 0.5, 15, 1),
    'fpn': ('fpn_pvt_t_toy_ade', 'ade', 'data/toy_ade', 'mIoU', 85.0, 10, 100),
}
EPOCHS = 12  # RetinaNet schedule of the learning run


class BudgetSpentError(Exception):
    """Raised by :class:`LearningCurveHook` when the training-time budget is spent."""


class LearningCurveHook(Hook):
    """After each validation, record the training time so far (validation excluded) and the metrics."""

    priority = 'LOWEST'

    def __init__(self, budget_minutes: float) -> None:
        self.budget_seconds = budget_minutes * 60
        self.points: list[dict[str, Any]] = []
        self.train_seconds = 0.0
        self._since = 0.0

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        if self.train_seconds + time.perf_counter() - self._since > self.budget_seconds:
            raise BudgetSpentError

    def before_train(self, runner: Any) -> None:
        self._since = time.perf_counter()

    def before_val(self, runner: Any) -> None:
        self.train_seconds += time.perf_counter() - self._since

    def after_val_epoch(self, runner: Any, metrics: dict[str, float] | None = None) -> None:
        point = dict(iter=runner.iter, epoch=runner.epoch, train_minutes=round(self.train_seconds / 60, 2))
        point.update({k: round(float(v), 4) for k, v in (metrics or {}).items()})
        point['load_average_1min'] = round(os.getloadavg()[0], 2)
        self.points.append(point)
        self._since = time.perf_counter()


def run_config(name: str, work_root: Path) -> dict[str, Any]:
    """Train one toy config with periodic validation; return its learning curve and verdict."""
    config, kind, data_dir, metric, target, minutes, interval = RUNS[name]
    data_root = REPO / data_dir
    if not data_root.exists():
        (make_toy_coco if kind == 'coco' else make_toy_ade)(data_root)
    cfg = Config.fromfile(str(REPO / 'configs' / 'toy' / f'{config}.py'))
    cfg.work_dir = str(work_root / config)
    cfg.launcher = 'none'
    if 'max_epochs' in cfg.train_cfg:
        cfg.train_cfg.max_epochs = cfg.default_hooks.checkpoint.interval = EPOCHS
        cfg.param_scheduler[-1].end = EPOCHS
    cfg.train_cfg.val_interval = interval
    hook = LearningCurveHook(minutes)
    runner = build_runner(cfg)
    runner.register_hook(hook)
    load_before = os.getloadavg()
    wall = time.perf_counter()
    try:
        runner.train()
    except BudgetSpentError:
        runner.val_loop.run()
    # the weights it ended with, for tools/demo.py (a budget stop saves no checkpoint of its own)
    runner.save_checkpoint(cfg.work_dir, 'final.pth', save_optimizer=False, save_param_scheduler=False)
    reached = [p for p in hook.points if p.get(metric, 0) >= target]
    return dict(
        config=f'configs/toy/{config}.py',
        metric=metric,
        target=target,
        budget_minutes=minutes,
        curve=hook.points,
        final=hook.points[-1].get(metric),
        first_reached_minutes=reached[0]['train_minutes'] if reached else None,
        met=bool(reached) and reached[0]['train_minutes'] <= minutes,
        train_minutes=round(hook.train_seconds / 60, 2),
        wall_minutes=round((time.perf_counter() - wall) / 60, 2),
        load_average_before=[round(x, 2) for x in load_before],
        load_average_after=[round(x, 2) for x in os.getloadavg()],
    )


def markdown(results: dict[str, Any], machine: dict[str, Any]) -> str:
    """The results as the Markdown page docs/learning_run.md."""
    lines = [
        '# Learning run',
        '',
        'Written by `python tools/analysis/learning_run.py`: the toy configs trained from scratch on',
        f'this machine ({machine["cpus"]} CPUs, torch {machine["torch"]} with {machine["torch_threads"]} threads,',
        f'{machine["date"]}). The machine is shared: the load average is recorded at each validation',
        '(2.0 means both cores busy, anything above means this run competed for them).',
        '',
    ]
    for result in results.values():
        verdict = 'met' if result['met'] else 'missed'
        lines += [
            f'## `{result["config"]}`',
            '',
            f'Target {result["metric"]} >= {result["target"]} within {result["budget_minutes"]} minutes of training: '
            f'**{verdict}** (final {result["final"]}, first reached after {result["first_reached_minutes"]} min; '
            f'{result["train_minutes"]} min of training, {result["wall_minutes"]} min wall time with validation).',
            '',
            '| iteration | epoch | training minutes | ' + result['metric'] + ' | load average |',
            '|---|---|---|---|---|',
        ]
        for point in result['curve']:
            lines.append(
                f'| {point["iter"]} | {point["epoch"]} | {point["train_minutes"]} | {point.get(result["metric"])} '
                f'| {point["load_average_1min"]} |'
            )
        lines.append('')
    return '\n'.join(lines)


def main() -> None:
    """Run the learning runs and write their results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--only', choices=sorted(RUNS), action='append', help='run only these (repeatable)')
    parser.add_argument('--out-dir', type=Path, default=REPO / 'docs')
    parser.add_argument('--work-dir', type=Path, default=REPO / 'work_dirs' / 'learning_run')
    args = parser.parse_args()
    allow_mmengine_checkpoints()
    os.chdir(REPO)
    out_json = args.out_dir / 'learning_run.json'
    results = json.loads(out_json.read_text())['runs'] if out_json.exists() and args.only else {}
    for name in args.only or RUNS:
        results[name] = run_config(name, args.work_dir)
    machine = dict(
        cpus=os.cpu_count(),
        torch=torch.__version__,
        torch_threads=torch.get_num_threads(),
        python=platform.python_version(),
        date=time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
    )
    args.out_dir.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(dict(machine=machine, runs=results), indent=2) + '\n')
    (args.out_dir / 'learning_run.md').write_text(markdown(results, machine))
    print(markdown(results, machine))


if __name__ == '__main__':
    run_tool(main)
