"""plot_curves reads mmengine's scalars.json layout and draws loss and metric curves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers import checkout_env

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / 'tools' / 'analysis' / 'plot_curves.py'


def write_run(work_dir: Path, stamp: str, losses: list[float], maps: list[float]) -> Path:
    """A work dir laid out as mmengine's LocalVisBackend writes it."""
    vis = work_dir / stamp / 'vis_data'
    vis.mkdir(parents=True)
    lines = [
        dict(lr=1e-4, loss=loss, loss_cls=loss * 0.6, loss_bbox=loss * 0.4, iter=10 * i + 10, step=10 * i + 10)
        for i, loss in enumerate(losses)
    ]
    lines += [{'coco/bbox_mAP': m, 'coco/bbox_mAP_50': m * 1.5, 'step': i + 1} for i, m in enumerate(maps)]
    path = vis / 'scalars.json'
    path.write_text('\n'.join(json.dumps(line) for line in lines) + '\n')
    return path


def test_plots_the_newest_run(tmp_path: Path) -> None:
    write_run(tmp_path, '20260101_000000', [9.0, 8.0], [0.01])
    newest = write_run(tmp_path, '20260102_000000', [2.0, 1.5, 1.2], [0.1, 0.3])
    out = tmp_path / 'curves.png'
    args = [sys.executable, str(TOOL), str(tmp_path), '--out', str(out)]
    result = subprocess.run(args, capture_output=True, text=True, env=checkout_env())
    assert result.returncode == 0, result.stderr
    assert str(newest) in result.stdout
    assert "3 loss points; last metrics {'coco/bbox_mAP': 0.3, 'coco/bbox_mAP_50':" in result.stdout
    assert out.read_bytes()[:4] == b'\x89PNG'


def test_not_a_work_dir(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(TOOL), str(tmp_path)], capture_output=True, text=True, env=checkout_env()
    )
    assert result.returncode != 0
    assert 'no */vis_data/scalars.json' in result.stderr
