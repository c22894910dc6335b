"""tools/demo.py draws detections and segmentations with OpenMMLab's visualizers on the CPU."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import assert_refused, checkout_env, run_tool, save_checkpoint

from mmpvt.checkpoint import allow_mmengine_checkpoints

ROOT = Path(__file__).resolve().parents[1]
DEMO = ROOT / 'tools' / 'demo.py'


def write_images(folder: Path, n: int) -> None:
    folder.mkdir()
    for i in range(n):
        canvas = np.full((128, 128, 3), 20 * i, np.uint8)
        cv2.circle(canvas, (40 + 10 * i, 60), 25, (0, 0, 255), -1)
        cv2.imwrite(str(folder / f'img{i}.jpg'), canvas)


@pytest.mark.parametrize('config', ['retinanet_pvt_t_fpn_toy_coco.py', 'fpn_pvt_t_toy_ade.py'])
def test_demo_draws_a_folder(config: str, tmp_path: Path) -> None:
    cfg_path = ROOT / 'configs' / 'toy' / config
    ckpt = tmp_path / 'model.pth'
    save_checkpoint(cfg_path, ckpt)
    write_images(tmp_path / 'images', 2)
    out_dir = tmp_path / 'vis'
    args = [str(DEMO), str(cfg_path), str(ckpt), str(tmp_path / 'images'), '--out-dir', str(out_dir)]
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=tmp_path, env=checkout_env())
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'wrote 2 picture(s)' in result.stdout
    for i in range(2):
        drawn = cv2.imread(str(out_dir / f'img{i}.png'))
        assert drawn is not None and drawn.shape[:2] == (128, 128)


def run_demo(*args: str | Path, cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, str(DEMO), *map(str, args)], capture_output=True, text=True, cwd=cwd, env=checkout_env()
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def detections(config: Path, checkpoint: Path, image: Path) -> tuple[np.ndarray, np.ndarray]:
    """(boxes, scores) the detector predicts on ``image``, computed here with mmdet's inference API."""
    from mmdet.apis import inference_detector, init_detector

    allow_mmengine_checkpoints()  # what the demo does before loading
    model = init_detector(str(config), str(checkpoint), device='cpu')
    instances = inference_detector(model, str(image)).pred_instances
    return instances.bboxes.numpy(), instances.scores.numpy()


def box_region(box: np.ndarray, shape: tuple[int, ...], margin: int = 0) -> tuple[slice, slice]:
    """The rows and columns of an (x0, y0, x1, y1) box, widened by ``margin`` pixels, inside an image."""
    x0, y0, x1, y1 = box
    h, w = shape[:2]
    rows = slice(max(int(y0) - margin, 0), min(int(np.ceil(y1)) + 1 + margin, h))
    cols = slice(max(int(x0) - margin, 0), min(int(np.ceil(x1)) + 1 + margin, w))
    return rows, cols


@pytest.mark.usefixtures('no_safe_globals')
def test_demo_draws_the_detections_above_the_score_threshold(tmp_path: Path) -> None:
    """The boxes scoring at least --score-thr are drawn (pixels change inside each of them), nothing else is;
    above the best score the picture is the input."""
    config, ckpt = tmp_path / 'config.py', tmp_path / 'model.pth'
    toy = ROOT / 'configs' / 'toy' / 'retinanet_pvt_t_fpn_toy_coco.py'
    # an untrained detector scores below the default threshold: keep its 20 best boxes
    config.write_text(f"_base_ = '{toy}'\nmodel = dict(test_cfg=dict(score_thr=0.0, max_per_img=20))\n")
    save_checkpoint(config, ckpt)
    write_images(tmp_path / 'images', 1)
    image = tmp_path / 'images' / 'img0.jpg'
    boxes, scores = detections(config, ckpt, image)
    best = np.sort(scores)[::-1]
    assert len(best) > 3 and best[2] > best[3]
    threshold = float(best[2] + best[3]) / 2  # the three best boxes are drawn, the others are not

    out = tmp_path / 'drawn.png'
    run_demo(config, ckpt, image, '--out-file', out, '--score-thr', threshold, cwd=tmp_path)
    source, drawn = cv2.imread(str(image)), cv2.imread(str(out))
    assert drawn is not None and drawn.shape == source.shape
    changed = np.abs(drawn.astype(int) - source.astype(int)).max(axis=2) > 30
    shown = boxes[scores >= threshold]
    assert len(shown) == 3
    near_a_shown_box = np.zeros(changed.shape, bool)
    for box in shown:
        assert changed[box_region(box, changed.shape)].mean() > 0.01, box
        near_a_shown_box[box_region(box, changed.shape, margin=3)] = True
    assert changed.any() and not changed[~near_a_shown_box].any()  # the hidden boxes were not drawn

    above = tmp_path / 'none.png'
    run_demo(config, ckpt, image, '--out-file', above, '--score-thr', float(best[0]) + 1e-3, cwd=tmp_path)
    assert np.array_equal(cv2.imread(str(above)), source)


def test_demo_draws_one_image_to_out_file(tmp_path: Path) -> None:
    cfg_path = ROOT / 'configs' / 'toy' / 'fpn_pvt_t_toy_ade.py'
    ckpt = tmp_path / 'model.pth'
    save_checkpoint(cfg_path, ckpt)
    # a background at least 35 levels (in some channel) from every ADE20K palette colour and from
    # black: whatever class the blend colours a pixel with, the pixel changes
    image, out_file = tmp_path / 'shapes.png', tmp_path / 'drawn' / 'overlay.png'
    canvas = np.full((96, 128, 3), (40, 160, 220), np.uint8)
    cv2.circle(canvas, (50, 40), 25, (0, 0, 255), -1)
    cv2.imwrite(str(image), canvas)
    args = [str(DEMO), str(cfg_path), str(ckpt), str(image), '--out-file', str(out_file)]
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=tmp_path, env=checkout_env())
    assert result.returncode == 0, result.stderr[-3000:]
    assert f'wrote 1 picture(s): {out_file}' in result.stdout
    assert not (tmp_path / 'demo_out').exists()  # no --out-dir folder when --out-file names the picture
    drawn = cv2.imread(str(out_file))
    assert drawn is not None and drawn.shape == canvas.shape
    # the segmentation is blended over every pixel (alpha 0.8): the picture is not the input
    changed = np.abs(drawn.astype(int) - canvas.astype(int)).max(axis=2) > 10
    assert changed.mean() > 0.9


def test_demo_reports_missing_files(tmp_path: Path) -> None:
    cfg_path = ROOT / 'configs' / 'toy' / 'retinanet_pvt_t_fpn_toy_coco.py'
    assert_refused(run_tool('demo.py', cfg_path, tmp_path / 'nope.pth', tmp_path, cwd=tmp_path), 'checkpoint file not')
    assert_refused(run_tool('demo.py', cfg_path, tmp_path, tmp_path, cwd=tmp_path), f'{tmp_path} is a folder, not a')
    assert_refused(run_tool('demo.py', tmp_path / 'no.py', tmp_path, tmp_path, cwd=tmp_path), 'checkpoint')
    assert list(tmp_path.iterdir()) == []  # no demo_out folder


def test_demo_refuses_another_models_checkpoint(small_detector: tuple[Path, Path], tmp_path: Path) -> None:
    """A segmentor's checkpoint with a detector's config: refused by the fit check, not drawn with its classes."""
    config, _ = small_detector
    segmentor = tmp_path / 'fpn.pth'
    save_checkpoint(ROOT / 'configs' / 'toy' / 'fpn_pvt_t_toy_ade.py', segmentor)
    write_images(tmp_path / 'images', 1)
    result = run_tool('demo.py', config, segmentor, tmp_path / 'images', '--out-dir', tmp_path / 'vis', cwd=tmp_path)
    assert_refused(result, f'{segmentor} is not a checkpoint of this RetinaNet: it provides')
    assert 'size mismatch' not in result.stdout + result.stderr
    assert not (tmp_path / 'vis').exists()


def test_demo_refuses_an_input_that_is_no_image(small_detector: tuple[Path, Path], tmp_path: Path) -> None:
    config, checkpoint = small_detector
    text = tmp_path / 'notes.jpg'
    text.write_text('not a picture')
    result = run_tool('demo.py', config, checkpoint, text, '--out-dir', tmp_path / 'vis', cwd=tmp_path)
    assert_refused(result, f'cannot decode image {text}: expected a JPEG, PNG')
    assert not (tmp_path / 'vis').exists()


def test_demo_counts_saves_json_and_goes_below_the_models_threshold(tmp_path: Path) -> None:
    """--score-thr below the config's test_cfg.score_thr (here 1.5, which keeps nothing) lowers the model's own;
    images in batches of 2; the count per image printed and saved as JSON; no COCO-classes warning."""
    toy = ROOT / 'configs' / 'toy' / 'retinanet_pvt_t_fpn_toy_coco.py'
    config, checkpoint = tmp_path / 'config.py', tmp_path / 'model.pth'
    config.write_text(f"_base_ = '{toy}'\nmodel = dict(test_cfg=dict(score_thr=1.5, max_per_img=5))\n")
    save_checkpoint(config, checkpoint)
    write_images(tmp_path / 'images', 3)
    preds = tmp_path / 'preds.json'
    args = ['--score-thr', '0', '--batch-size', '2', '--pred-out', preds, '--out-dir', tmp_path / 'vis']
    result = run_tool('demo.py', config, checkpoint, tmp_path / 'images', *args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(preds.read_text())
    assert sorted(found) == [str(tmp_path / 'images' / f'img{i}.jpg') for i in range(3)]
    for path, prediction in found.items():
        detections = prediction['detections']
        assert len(detections) == 5  # max_per_img: none dropped by the config's score_thr 1.5
        assert all(d['name'] in ('circle', 'square', 'triangle', 'star') for d in detections)
        assert f'{path}: 5 detection(s) scoring >= 0 (' in result.stdout
    assert "below the config's test_cfg score_thr 1.5: the model keeps" in result.stdout + result.stderr
    assert 'use COCO classes' not in result.stderr
    assert len(list((tmp_path / 'vis').glob('*.png'))) == 3
