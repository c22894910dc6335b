"""plot_curves reads mmengine's scalars.json layout, joins a resumed run to its earlier one, compares runs."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from helpers import REPO, assert_refused, run_tool

_spec = importlib.util.spec_from_file_location('plot_curves', REPO / 'tools' / 'analysis' / 'plot_curves.py')
plot_curves = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(plot_curves)


def write_run(work_dir: Path, stamp: str, losses: list[float], maps: list[float], first: int = 1) -> Path:
    """A work dir laid out as mmengine's LocalVisBackend writes it; iterations from ``first`` × 10, steps from 1."""
    vis = work_dir / stamp / 'vis_data'
    vis.mkdir(parents=True)
    lines = [
        dict(lr=1e-4, loss=loss, loss_cls=loss * 0.6, loss_bbox=loss * 0.4, iter=10 * i, step=10 * i)
        for i, loss in enumerate(losses, first)
    ]
    lines += [{'coco/bbox_mAP': m, 'coco/bbox_mAP_50': m * 1.5, 'step': i} for i, m in enumerate(maps, first)]
    path = vis / 'scalars.json'
    path.write_text('\n'.join(json.dumps(line) for line in lines) + '\n')
    return path


def test_a_resumed_run_keeps_the_earlier_points(tmp_path: Path) -> None:
    """Run 1 logged iterations 10-40, the resumed run 30-50: 10, 20 from run 1, 30-50 from the resumed one."""
    write_run(tmp_path, '20260101_000000', [9.0, 8.0, 7.0, 6.0], [0.01, 0.02, 0.03, 0.04])
    os.utime(tmp_path / '20260101_000000' / 'vis_data' / 'scalars.json', (1, 1))  # the older run
    write_run(tmp_path, '20260102_000000', [2.0, 1.5, 1.2], [0.1, 0.2, 0.3], first=3)
    train, val = plot_curves.read_scalars(plot_curves.find_scalars(str(tmp_path)))
    assert sorted(train['loss'].items()) == [(10, 9.0), (20, 8.0), (30, 2.0), (40, 1.5), (50, 1.2)]
    assert sorted(val['coco/bbox_mAP'].items()) == [(1, 0.01), (2, 0.02), (3, 0.1), (4, 0.2), (5, 0.3)]
    out = tmp_path / 'curves.png'
    result = run_tool('analysis/plot_curves.py', tmp_path, '--out', out)
    assert result.returncode == 0, result.stderr
    assert f"{tmp_path}: 5 loss points from 2 run(s); last metrics {{'coco/bbox_mAP': 0.3, 'coco/bbox_mAP_50':" in (
        result.stdout
    )
    assert out.read_bytes()[:4] == b'\x89PNG'


def test_compares_several_runs(tmp_path: Path) -> None:
    write_run(tmp_path / 'a', '20260101_000000', [3.0, 2.0], [0.1, 0.2])
    write_run(tmp_path / 'b', '20260101_000000', [3.0, 1.0, 0.5], [0.3])
    out = tmp_path / 'compare.png'
    result = run_tool('analysis/plot_curves.py', tmp_path / 'a', tmp_path / 'b', '--out', out)
    assert result.returncode == 0, result.stderr
    assert f'{tmp_path / "a"}: 2 loss points' in result.stdout and f'{tmp_path / "b"}: 3 loss points' in result.stdout
    assert out.read_bytes()[:4] == b'\x89PNG'


def test_not_a_work_dir(tmp_path: Path) -> None:
    assert_refused(run_tool('analysis/plot_curves.py', tmp_path), f'no */vis_data/scalars.json under {tmp_path}')
    assert_refused(run_tool('analysis/plot_curves.py', tmp_path / 'nope'), f'{tmp_path / "nope"} not found')
    assert list(tmp_path.iterdir()) == []
