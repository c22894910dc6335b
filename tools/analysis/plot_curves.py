"""Plot training loss and validation metrics (mAP / mIoU) of one or several mmengine work dirs.

Reads every ``<work_dir>/<timestamp>/vis_data/scalars.json`` that mmengine's ``LocalVisBackend``
wrote, oldest first, so a resumed run continues the curve of the run it resumed (its points replace
those of the same iteration; the earlier ones are kept). A scalars.json file may be given instead of a
work dir. Several work dirs are drawn side by side, one colour each, to compare runs: the total loss
against iterations and the metrics against validation steps.

Examples:
    python tools/analysis/plot_curves.py work_dirs/retinanet_pvt_t_fpn_toy_coco --out curves.png
    python tools/analysis/plot_curves.py work_dirs/run_a work_dirs/run_b --metrics coco/bbox_mAP --out compare.png
"""

from __future__ import annotations

import argparse
import glob
import json
import os.path as osp
from collections import defaultdict

from mmpvt.launch import ConfigError
from mmpvt.launch.entry import run_tool

DEFAULT_METRICS = ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP', 'mIoU', 'aAcc')

#: Curves keyed by name, each {step: value}.
Curves = dict[str, dict[float, float]]


def find_scalars(path: str) -> list[str]:
    """The scalars.json files of ``path`` (a file, or every run of a work dir, oldest first)."""
    if osp.isfile(path):
        return [path]
    if not osp.isdir(path):
        raise ConfigError(f'{path} not found; expected an mmengine work dir or a scalars.json file')
    runs = sorted(glob.glob(osp.join(path, '*', 'vis_data', 'scalars.json')), key=osp.getmtime)
    if not runs:
        raise ConfigError(
            f'no */vis_data/scalars.json under {path}: is it an mmengine work dir? (give the work dir of a run, '
            'or a scalars.json file)'
        )
    return runs


def read_scalars(paths: list[str]) -> tuple[Curves, Curves]:
    """(train curves keyed by loss name, validation curves keyed by metric) of runs read in order.

    A later run's point replaces an earlier run's at the same iteration (or validation step).
    """
    train: Curves = defaultdict(dict)
    val: Curves = defaultdict(dict)
    for path in paths:
        with open(path, encoding='utf-8') as f:
            for line_no, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ConfigError(
                        f'{path}:{line_no} is not JSON: {err}; expected one JSON record per line'
                    ) from err
                if 'loss' in record:
                    step = record.get('iter', record.get('step'))
                    for key, value in record.items():
                        if key.startswith('loss') or key.endswith('_loss'):
                            train[key][step] = value
                else:
                    for key, value in record.items():
                        if key != 'step' and isinstance(value, int | float):
                            val[key][record['step']] = value
    return train, val


def _points(curve: dict[float, float]) -> tuple[list[float], list[float]]:
    steps = sorted(curve)
    return steps, [curve[s] for s in steps]


def plot(runs: dict[str, tuple[Curves, Curves]], metrics: list[str], out: str) -> None:
    """Draw the runs' losses (every loss term for one run, the total for several) and their metrics."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_val) = plt.subplots(1, 2, figsize=(11, 4))
    several = len(runs) > 1
    shown = False
    for index, (name, (train, val)) in enumerate(runs.items()):
        colour = f'C{index}' if several else None
        for key, curve in sorted(train.items()):
            if several and key != 'loss':
                continue
            label = f'{name} {key}' if several else key
            ax_loss.plot(*_points(curve), label=label, color=colour, linewidth=1.5 if key == 'loss' else 0.8)
        for style, key in zip(['-', '--', ':', '-.', '-'], [m for m in metrics if m in val]):
            ax_val.plot(*_points(val[key]), style, marker='o', color=colour, label=f'{name} {key}' if several else key)
            shown = True
    ax_loss.set(xlabel='iteration', ylabel='loss', title='training loss')
    ax_loss.legend(fontsize=8)
    ax_val.set(xlabel='validation step (epoch or iteration)', title='validation')
    if shown:
        ax_val.legend(fontsize=8)
    else:
        ax_val.text(0.5, 0.5, 'no validation metrics logged', ha='center', transform=ax_val.transAxes)
    fig.suptitle(', '.join(runs), fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument('work_dirs', nargs='+', help='mmengine work dirs (or scalars.json files) to draw')
    parser.add_argument('--metrics', nargs='+', default=list(DEFAULT_METRICS), help='validation keys to plot')
    parser.add_argument('--out', default='curves.png', help='PNG to write')
    args = parser.parse_args(argv)
    runs: dict[str, tuple[Curves, Curves]] = {}
    for work_dir in args.work_dirs:
        scalars = find_scalars(work_dir)
        train, val = read_scalars(scalars)
        if not train:
            raise ConfigError(f'{", ".join(scalars)} hold(s) no training loss records; expected a training run')
        runs[work_dir] = (train, val)
        final = {m: _points(val[m])[1][-1] for m in args.metrics if m in val}
        print(f'{work_dir}: {len(train["loss"])} loss points from {len(scalars)} run(s); last metrics {final}')
    plot(runs, args.metrics, args.out)
    print(f'wrote {args.out}')
    return 0


if __name__ == '__main__':
    run_tool(main)
