"""ONNX export with dynamic H and W: onnxruntime matches PyTorch at two input sizes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch
import torch.nn.functional as F
from helpers import assert_refused, checkout_env, run_tool, save_checkpoint

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
    existing = tmp_path / 'taken.onnx'
    existing.write_bytes(b'user data')
    result = run_tool(
        'deployment/export_onnx.py', '--arch', 'tiny', '--shape', '100', '96', '--out', tmp_path / 'a.onnx'
    )
    assert result.returncode == 2 and 'multiples of 32' in result.stderr  # argparse's usage error
    result = run_tool('deployment/export_onnx.py', '--arch', 'tiny', '--out', existing)
    assert_refused(result, f'{existing} (or {existing}.data) exists; refusing to overwrite it')
    assert existing.read_bytes() == b'user data' and sorted(tmp_path.iterdir()) == [existing]


def test_export_tool_mistakes_end_in_one_error_line(tmp_path: Path) -> None:
    """A --cfg-options typo, a missing config, another model's checkpoint: exit 1, one line, nothing written."""
    config = ROOT / 'configs' / 'retinanet_pvt_t_fpn_1x_coco.py'
    out = tmp_path / 'model.onnx'
    result = run_tool('deployment/export_onnx.py', config, '--cfg-options', 'model.backbone.arh=small', '--out', out)
    assert_refused(result, "--cfg-options model.backbone.arh: model.backbone has no 'arh'; did you mean 'arch'?")
    assert_refused(run_tool('deployment/export_onnx.py', tmp_path / 'no.py', '--out', out), 'config file not found')
    segmentor = tmp_path / 'fpn.pth'
    save_checkpoint(ROOT / 'configs' / 'toy' / 'fpn_pvt_t_toy_ade.py', segmentor)
    result = run_tool('deployment/export_onnx.py', config, '--whole', '--checkpoint', segmentor, '--out', out)
    assert_refused(result, f'{segmentor} is not a checkpoint of this RetinaNet')
    result = run_tool('deployment/export_onnx.py', '--arch', 'small', '--checkpoint', segmentor, '--out', out)
    assert_refused(result, f'--checkpoint: {segmentor} does not fit this PVT', "like a checkpoint of PVT 'tiny'")
    assert sorted(tmp_path.iterdir()) == [segmentor]


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
    assert f'the weights are in {out}.data beside it' in result.stdout
    names = [f'{group}_{level}' for group in ('cls_score', 'bbox_pred') for level in range(5)]
    assert f'outputs: {", ".join(names)};' in result.stdout
    assert [o.name for o in onnx.load(str(out), load_external_data=False).graph.output] == names
