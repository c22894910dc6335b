"""ONNX export with dynamic H and W: onnxruntime matches PyTorch at two input sizes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import checkout_env

from mmpvt import PVT
from mmpvt.export import export_onnx, max_abs_diffs
from mmpvt.layers.pooling import adaptive_avg_pool2d_matmul

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize('hw', [(7, 7), (14, 9), (37, 50), (8, 61)])
def test_matmul_pooling_equals_adaptive_pooling(hw: tuple[int, int]) -> None:
    x = torch.randn(2, 3, *hw)
    torch.testing.assert_close(adaptive_avg_pool2d_matmul(x, 7), F.adaptive_avg_pool2d(x, 7), atol=1e-6, rtol=0)


@pytest.mark.parametrize('arch', ['tiny', 'b2_li'])
def test_backbone_export_matches_at_two_sizes(arch: str, tmp_path: Path) -> None:
    """One block per stage keeps the export quick; every layer type is still exported."""
    torch.manual_seed(0)
    model = PVT(arch, depths=(1, 1, 1, 1)).eval()
    path = tmp_path / f'{arch}.onnx'
    export_onnx(model, path, (64, 96), opset=18)
    for hw in [(64, 96), (160, 128)]:
        diffs = max_abs_diffs(path, model, torch.randn(1, 3, *hw))
        assert len(diffs) == 4
        assert max(diffs) < 1e-4, (hw, diffs)


def test_export_tool_refuses_bad_shapes_and_existing_files(tmp_path: Path) -> None:
    tool = str(ROOT / 'tools' / 'deployment' / 'export_onnx.py')
    existing = tmp_path / 'taken.onnx'
    existing.write_bytes(b'user data')
    runs = {
        'shape': [tool, '--arch', 'tiny', '--shape', '100', '96', '--out', str(tmp_path / 'a.onnx')],
        'exists': [tool, '--arch', 'tiny', '--out', str(existing)],
    }
    for name, args in runs.items():
        result = subprocess.run(
            [sys.executable, *args], capture_output=True, text=True, check=False, env=checkout_env()
        )
        assert result.returncode == 2, name
        expected = 'multiples of 32' if name == 'shape' else 'refusing to overwrite'
        assert expected in result.stderr, result.stderr
    assert existing.read_bytes() == b'user data'


def test_whole_retinanet_export_through_the_tool(tmp_path: Path) -> None:
    """RetinaNet-PVT-T's tensor forward (no post-processing) exports and matches at two sizes."""
    out = tmp_path / 'retinanet.onnx'
    args = [
        str(ROOT / 'tools' / 'deployment' / 'export_onnx.py'),
        str(ROOT / 'configs' / 'retinanet_pvt_t_fpn_1x_coco.py'),
        '--whole',
        '--shape', '128', '160',
        '--cfg-options', 'model.backbone.depths=(1,1,1,1)',
        '--out', str(out),
    ]  # fmt: skip
    result = subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, check=False, cwd=ROOT, env=checkout_env()
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert 'OK at tolerance 0.0001' in result.stdout
    # 5 FPN levels × (class scores, box deltas), at the example size and a second one.
    assert result.stdout.count('max |onnxruntime') == 2
    assert all(line.count(',') == 9 for line in result.stdout.splitlines() if 'max |onnxruntime' in line)
