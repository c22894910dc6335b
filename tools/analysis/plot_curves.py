"""Plot training loss and validation metrics (mAP / mIoU) from an mmengine work dir.

Reads the newest ``<work_dir>/<timestamp>/vis_data/scalars.json`` that mmengine's
``LocalVisBackend`` writes (or a given scalars.json) and saves one PNG with the loss
curve(s) against iterations and the metric curve(s) against validation steps.

Example:
    python tools/analysis/plot_curves.py work_dirs/retinanet_pvt_t_fpn_toy_coco --out curves.png
"""

from __future__ import annotations

import argparse
import glob
import json
import os.path as osp
import sys
from collections import defaultdict

DEFAULT_METRICS = ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP', 'mIoU', 'aAcc')


def find_scalars(path: str) -> str:
    """The scalars.json of ``path`` (a file, or the newest run inside a work dir)."""
    if osp.isfile(path):
        return path
    runs = sorted(glob.glob(osp.join(path, '*', 'vis_data', 'scalars.json')), key=osp.getmtime)
    if not runs:
        raise SystemExit(f'no */vis_data/scalars.json under {path}: is it an mmengine work dir?')
    return runs[-1]


def read_scalars(path: str) -> tuple[dict[str, list[tuple[float, float]]], dict[str, list[tuple[float, float]]]]:
    """(train curves keyed by loss name, validation curves keyed by metric), each [(step, value)]."""
    train, val = defaultdict(list), defaultdict(list)
    with open(path, encoding='utf-8') as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise SystemExit(f'{path}:{line_no} is not JSON: {err}') from err
            if 'loss' in record:
                for key, value in record.items():
                    if key.startswith('loss') or key.endswith('_loss'):
                        train[key].append((record.get('iter', record['step']), value))
            else:
                for key, value in record.items():
                    if key != 'step' and isinstance(value, (int, float)):
                        val[key].append((record['step'], value))
    return train, val


def plot(train: dict, val: dict, metrics: list[str], out: str, title: str) -> None:
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
    for key, points in sorted(train.items()):
        ax_loss.plot(*zip(*points), label=key, linewidth=1.5 if key == 'loss' else 0.8)
    ax_loss.set(xlabel='iteration', ylabel='loss', title='training loss')
    ax_loss.legend(fontsize=8)
    shown = [m for m in metrics if m in val]
    for key in shown:
        ax_val.plot(*zip(*val[key]), marker='o', label=key)
    ax_val.set(xlabel='validation step (epoch or iteration)', title='validation')
    if shown:
        ax_val.legend(fontsize=8)
    else:
        ax_val.text(0.5, 0.5, 'no validation metrics logged', ha='center', transform=ax_val.transAxes)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('work_dir', help='an mmengine work dir, or a scalars.json file')
    parser.add_argument('--metrics', nargs='+', default=list(DEFAULT_METRICS), help='validation keys to plot')
    parser.add_argument('--out', default='curves.png', help='PNG to write')
    args = parser.parse_args(argv)
    scalars = find_scalars(args.work_dir)
    train, val = read_scalars(scalars)
    if not train:
        raise SystemExit(f'{scalars} holds no training loss records')
    plot(train, val, args.metrics, args.out, scalars)
    final = {m: val[m][-1][1] for m in args.metrics if m in val}
    print(f'wrote {args.out} from {scalars}: {len(train["loss"])} loss points; last metrics {final}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
