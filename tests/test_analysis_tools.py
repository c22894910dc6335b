"""The analysis tools mmdet's and mmseg's users reach for, on our configs: an FPS benchmark for a config and
checkpoint, publishing a checkpoint, and which of mmdet's / mmseg's own tools work as they are (docs/training.md).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import cv2
import pytest
import torch
from helpers import TINY, assert_refused, run_tool, toy_config

from mmpvt.checkpoint import load_file


def test_fps_of_a_config_and_checkpoint(small_detector: tuple[Path, Path], tmp_path: Path) -> None:
    config, checkpoint = small_detector
    result = run_tool('analysis/fps.py', config, checkpoint, '--images', '2', '--warmup', '1', cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r'config\.py: \d+\.\d+ images/s \(\d+\.\d ms per image\) over 2 test images', result.stdout)
    result = run_tool('analysis/fps.py', config, checkpoint, '--images', '10', cwd=tmp_path)
    assert_refused(result, 'the test set has 4 images; --warmup + --images need 15')


def test_publish_model_drops_the_training_state_and_hashes_the_name(
    small_detector: tuple[Path, Path], tmp_path: Path
) -> None:
    _, checkpoint = small_detector
    training = tmp_path / 'epoch_12.pth'
    saved = load_file(checkpoint)
    saved['optimizer'] = {'state': {0: {'exp_avg': torch.ones(3)}}, 'param_groups': []}
    saved['message_hub'] = {'log_scalars': {}}
    torch.save(saved, training)
    result = run_tool('model_converters/publish_model.py', training, tmp_path / 'out' / 'retinanet.pth')
    assert result.returncode == 0, result.stderr[-3000:]
    (published,) = (tmp_path / 'out').glob('retinanet-*.pth')
    assert published.name == f'retinanet-{hashlib.sha256(published.read_bytes()).hexdigest()[:8]}.pth'
    content = load_file(published)
    assert set(content) == {'state_dict', 'meta'} and content['state_dict'].keys() == saved['state_dict'].keys()
    assert 'dropped: message_hub, optimizer' in result.stdout
    again = run_tool('model_converters/publish_model.py', training, tmp_path / 'out' / 'retinanet.pth')
    assert_refused(again, f'{published} exists; refusing to overwrite it')
    assert_refused(run_tool('model_converters/publish_model.py', tmp_path, tmp_path / 'x.pth'), 'is a folder')


@pytest.mark.parametrize(
    ('name', 'data'), [('fpn_pvt_t_toy_ade', 'toy_ade'), ('mask_rcnn_pvt_t_fpn_toy_coco', 'toy_coco')]
)
def test_browse_dataset_draws_the_pipelines_output(
    name: str, data: str, request: pytest.FixtureRequest, tmp_path: Path
):
    """Segmentation (where mmseg's own tool fails under OpenCV 5) and detection with masks."""
    cfg = toy_config(name, request.getfixturevalue(data), tmp_path / 'work')
    config = tmp_path / 'config.py'
    cfg.dump(str(config))
    out = tmp_path / 'browse'
    result = run_tool('analysis/browse_dataset.py', config, '--out-dir', out, '--max-images', '3')
    assert result.returncode == 0, result.stderr[-3000:]
    pictures = sorted(out.glob('*.png'))
    assert len(pictures) == 3 and f'wrote 3 picture(s) of train_dataloader to {out}' in result.stdout
    assert all(cv2.imread(str(p)).shape[:2] == (TINY, TINY) for p in pictures)  # the pipeline's size (Resize)
    missing = run_tool(
        'analysis/browse_dataset.py', config, '--cfg-options', f'train_dataloader.dataset.data_root={tmp_path}/x'
    )
    assert_refused(missing, f'train_dataloader: {tmp_path}/x not found')


def test_the_bf16_benchmark_reports_every_row(tmp_path: Path) -> None:
    """The issue-23 benchmark end to end on tiny sizes: GEMM rates, inference, training and RetinaNet rows."""
    out = tmp_path / 'bench.json'
    args = ['--arch', 'tiny', '--tasks', 'bf16', '--infer-size', '64', '64', '--train-size', '64', '64']
    args += ['--detector-size', '64', '96', '--repeats', '1', '--warmup', '0', '--json', out]
    result = run_tool('analysis/benchmark.py', *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    results = json.loads(out.read_text())
    gemm = results['bf16_gemm']
    assert gemm['bf16_gflops'] > 0 and gemm['fp32_gflops'] > 0
    infer, detector = results['bf16_infer_64x64'], results['bf16_retinanet_64x96']
    # The bf16 path's FLOP rate stays below the faster GEMM rate: bf16's where it is fast (AMX); where oneDNN
    # emulates bf16 (AVX2 only: 1.4 GFLOP/s against fp32's 34 on the Zen 1 EPYC) its fp32 parts outrun it.
    fastest = max(1.0, gemm['fp32_gflops'] / gemm['bf16_gflops'])
    assert 0 < infer['mmpvt_bf16_error'] < 5e-2 and 0 < infer['bf16_share'] < fastest
    assert 0 < infer['fp32_share'] < 1
    assert 0 < detector['bf16_backbone_error'] < 5e-2 and 0 < detector['bf16_whole_error'] < 5e-2
    assert results['bf16_train_2x64x64']['mmpvt_bf16'] > 0
    assert 'bf16 backbone, neck and head under autocast' in result.stdout
