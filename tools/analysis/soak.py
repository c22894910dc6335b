"""Soak test: train the toy RetinaNet-PVT-T for a long time-bound schedule, in segments that each
resume the previous one through tools/train.py's code path, with periodic validation, and report
the process's memory growth per 100 iterations and any failures.

Usage: python tools/analysis/soak.py [--minutes 60] [--segment-iters 300] [--val-interval 150]
       [--work-dir work_dirs/soak] [--full]

All segments run in this one process (each builds a new Runner, as a resumed job would), so a
leak across Runners shows as well as one across iterations. A hook samples the resident set size
(VmRSS) every 100 iterations into WORK_DIR/memory.jsonl; the report (WORK_DIR/soak_report.json and
stdout) gives the growth per 100 iterations fitted after the warm-up (the first segment). Not part
of the test suite; see docs/reliability.md for the figures of a run.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np
from mmengine.hooks import Hook
from mmengine.registry import HOOKS

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from mmpvt.datasets import make_toy_coco  # noqa: E402
from mmpvt.launch.entry import run_tool  # noqa: E402
from mmpvt.launch.main import train  # noqa: E402

SAMPLE_EVERY = 100

CONFIG = """
_base_ = '{base}'
data_root = '{data_root}/'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=({size}, {size}), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=({size}, {size}), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
loader = dict(num_workers=0, persistent_workers=False)
train_dataloader = dict(batch_size={batch}, **loader, dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(batch_size={batch}, **loader, dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator
model = dict(data_preprocessor=dict(pad_size_divisor=32){model})
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters={max_iters}, val_interval={val_interval})
param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=100)]
default_hooks = dict(logger=dict(interval=50), checkpoint=dict(by_epoch=False, interval={segment}, max_keep_ckpts=2))
log_processor = dict(by_epoch=False)
custom_hooks = [dict(type='RssProbeHook', path='{memory}')]
randomness = dict(seed=0, deterministic=True)
"""

SMALL_MODEL = """,
    backbone=dict(depths=(1, 1, 1, 1)),
    neck=dict(out_channels=32),
    bbox_head=dict(in_channels=32, feat_channels=32, stacked_convs=1),
"""


def rss_mib() -> float:
    """This process's resident set size in MiB (Linux /proc)."""
    for line in Path('/proc/self/status').read_text().splitlines():
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
    raise RuntimeError('no VmRSS in /proc/self/status')


@HOOKS.register_module()
class RssProbeHook(Hook):
    """Append ``{"iter": ..., "rss_mib": ...}`` to ``path`` every 100 training iterations."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        """Record the RSS after every 100th iteration."""
        if (runner.iter + 1) % SAMPLE_EVERY == 0:
            with self.path.open('a') as f:
                f.write(json.dumps({'iter': runner.iter + 1, 'rss_mib': round(rss_mib(), 1), 't': time.time()}) + '\n')


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--minutes', type=float, default=60.0, help='stop starting new segments after this')
    parser.add_argument('--segment-iters', type=int, default=300, help='iterations per resumed segment')
    parser.add_argument('--val-interval', type=int, default=150)
    parser.add_argument('--work-dir', default='work_dirs/soak')
    parser.add_argument('--image-size', type=int, default=64)
    parser.add_argument('--batch-size', type=int, default=2)
    parser.add_argument('--full', action='store_true', help='the toy config as is (default: depths 1 and a 32-ch head)')
    return parser.parse_args()


def write_config(args: argparse.Namespace, work: Path, data_root: Path, max_iters: int) -> Path:
    path = work / 'soak_config.py'
    path.write_text(
        CONFIG.format(
            base=REPO / 'configs' / 'toy' / 'retinanet_pvt_t_fpn_toy_coco.py',
            data_root=data_root,
            size=args.image_size,
            batch=args.batch_size,
            model='' if args.full else SMALL_MODEL,
            max_iters=max_iters,
            val_interval=args.val_interval,
            segment=args.segment_iters,
            memory=work / 'memory.jsonl',
        )
    )
    return path


def growth_per_100(samples: list[dict[str, float]], warm_up: int) -> float | None:
    """Least-squares slope of RSS (MiB) per 100 iterations over the samples after ``warm_up``."""
    points = [(s['iter'], s['rss_mib']) for s in samples if s['iter'] > warm_up]
    if len(points) < 3:
        return None
    iters, rss = np.array(points).T
    return float(np.polyfit(iters, rss, 1)[0] * 100)


def main() -> int:
    args = parse_args()
    work = Path(args.work_dir).resolve()
    train_dir = work / 'train'
    work.mkdir(parents=True, exist_ok=True)
    data_root = work / 'toy_coco'
    if not (data_root / 'annotations').is_dir():
        make_toy_coco(data_root, num_train=64, num_val=16, size=args.image_size)
    (work / 'memory.jsonl').unlink(missing_ok=True)
    start, failures, segments, metrics = time.monotonic(), [], [], {}
    while time.monotonic() - start < args.minutes * 60:
        max_iters = (len(segments) + 1) * args.segment_iters
        config = write_config(args, work, data_root, max_iters)
        argv = [str(config), '--work-dir', str(train_dir)] + (['--resume'] if segments else [])
        t0 = time.monotonic()
        try:
            metrics = train(argv)
        except Exception:  # a soak reports every failure and stops
            failures.append(traceback.format_exc())
            break
        segments.append({'max_iters': max_iters, 'seconds': round(time.monotonic() - t0, 1), 'rss_mib': rss_mib()})
        print(f'segment {len(segments)}: up to iteration {max_iters} in {segments[-1]["seconds"]} s', flush=True)
    samples = [json.loads(line) for line in (work / 'memory.jsonl').read_text().splitlines()] if segments else []
    report = {
        'minutes': round((time.monotonic() - start) / 60, 1),
        'iterations': segments[-1]['max_iters'] if segments else 0,
        'segments': segments,
        'rss_mib_per_100_iters': samples,
        'growth_mib_per_100_iters_after_warm_up': growth_per_100(samples, warm_up=args.segment_iters),
        'last_validation': metrics,
        'failures': failures,
    }
    (work / 'soak_report.json').write_text(json.dumps(report, indent=1))
    print(json.dumps({k: v for k, v in report.items() if k != 'rss_mib_per_100_iters'}, indent=1))
    return 1 if failures else 0


if __name__ == '__main__':
    run_tool(main)
