"""tools/test.py's --tta and --out as mmdet's and mmseg's own test.py take them, run as a user would."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import REPO, checkout_env, save_checkpoint, toy_config

from mmpvt.checkpoint import load_file

TEST_TOOL = str(REPO / 'tools' / 'test.py')


def run_test_tool(*args: str | Path, work_dir: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, TEST_TOOL, *map(str, args), '--work-dir', str(work_dir)]
    env = checkout_env(OMP_NUM_THREADS='1')
    return subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPO, env=env, timeout=900)


@pytest.mark.slow
def test_detector_tta_flips_and_merges(small_detector: tuple[Path, Path], tmp_path: Path) -> None:
    """The toy config has no tta_model: mmdet's flip TTA (DetTTAModel, NMS 0.5) is used, the checkpoint is
    loaded into the wrapped detector (strictly: a key mismatch would fail the run) and predictions change."""
    config, checkpoint = small_detector
    plain, tta = tmp_path / 'plain.pkl', tmp_path / 'tta.pkl'
    first = run_test_tool(config, checkpoint, '--out', plain, work_dir=tmp_path / 'plain')
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_test_tool(config, checkpoint, '--tta', '--out', tta, work_dir=tmp_path / 'tta')
    assert second.returncode == 0, second.stderr[-3000:]
    output = second.stdout + second.stderr
    assert 'DetTTAModel' in output and 'coco/bbox_mAP' in output
    assert 'the config has no tta_model' in output
    by_image = {s['img_path']: s['pred_instances'] for s in pickle.loads(plain.read_bytes())}
    merged = {s['img_path']: s['pred_instances'] for s in pickle.loads(tta.read_bytes())}
    assert merged.keys() == by_image.keys() and len(merged) == 4
    changed = [
        path
        for path in merged
        if merged[path]['bboxes'].shape != by_image[path]['bboxes'].shape
        or not np.allclose(np.asarray(merged[path]['bboxes']), np.asarray(by_image[path]['bboxes']))
    ]
    assert changed, 'TTA gave exactly the plain predictions'


IDENTITY_TTA = """
_base_ = '{base}'
tta_model = dict(type='DetTTAModel', tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5), max_per_img=20))
tta_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),  # as the toy config's test pipeline
    dict(type='LoadAnnotations', with_bbox=True),
    dict(
        type='TestTimeAug',
        transforms=[
            [dict(type='RandomFlip', prob=0.0)],
            [
                dict(
                    type='PackDetInputs',
                    meta_keys=(
                        'img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'flip', 'flip_direction'
                    ),
                )
            ],
        ],
    ),
]
"""


@pytest.mark.slow
def test_detector_tta_uses_the_checkpoints_weights(small_detector: tuple[Path, Path], tmp_path: Path) -> None:
    """A config's own TTA with one unflipped pass predicts what the plain run predicts, so the trained
    weights (not a fresh initialisation) reached the wrapped detector."""
    config, fresh = small_detector
    # weights the config's seed would not rebuild: a TTA model left at its initialisation must not pass
    saved = load_file(fresh)
    generator = torch.Generator().manual_seed(1)
    for value in saved['state_dict'].values():
        if value.is_floating_point():
            value.add_(0.05 * torch.randn(value.shape, generator=generator))
    checkpoint = tmp_path / 'perturbed.pth'
    torch.save(saved, checkpoint)
    identity = tmp_path / 'identity_tta.py'
    identity.write_text(IDENTITY_TTA.format(base=config))
    plain, tta = tmp_path / 'plain.pkl', tmp_path / 'tta.pkl'
    for args, out in (((), plain), (('--tta',), tta)):
        result = run_test_tool(identity, checkpoint, *args, '--out', out, work_dir=tmp_path / out.stem)
        assert result.returncode == 0, result.stderr[-3000:]
    assert 'the config has no tta' not in result.stdout + result.stderr
    by_image = {s['img_path']: rows(s['pred_instances']) for s in pickle.loads(plain.read_bytes())}
    for sample in pickle.loads(tta.read_bytes()):
        np.testing.assert_allclose(rows(sample['pred_instances']), by_image[sample['img_path']], atol=1e-3)


def rows(instances: dict) -> np.ndarray:
    """Predictions as rows (label, x1, y1, x2, y2, score) in a fixed order, to compare sets of boxes."""
    table = np.column_stack(
        [np.asarray(instances['labels']), np.asarray(instances['bboxes']), np.asarray(instances['scores'])]
    ).astype(np.float64)
    return table[np.lexsort(np.round(table, 2).T[::-1])]


def test_detector_out_must_be_a_pickle(small_detector: tuple[Path, Path], tmp_path: Path) -> None:
    config, checkpoint = small_detector
    result = run_test_tool(config, checkpoint, '--out', tmp_path / 'preds', work_dir=tmp_path / 'w')
    assert result.returncode == 1
    assert '--out must name a .pkl file for a detector' in result.stderr
    assert 'Traceback' not in result.stderr


@pytest.fixture(scope='module')
def segmentor(toy_ade: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(config, checkpoint) of an untrained toy Semantic FPN-PVT-T with one block per stage."""
    folder = tmp_path_factory.mktemp('segmentor')
    cfg = toy_config('fpn_pvt_t_toy_ade', toy_ade, folder / 'unused')
    cfg.model.backbone.depths = (1, 1, 1, 1)
    cfg.tta_pipeline[1].transforms[0] = [dict(type='Resize', scale_factor=r, keep_ratio=True) for r in (1.0, 1.5)]
    config, checkpoint = folder / 'config.py', folder / 'model.pth'
    cfg.dump(str(config))
    save_checkpoint(config, checkpoint)
    return config, checkpoint


def test_segmentor_out_writes_one_label_png_per_image(segmentor: tuple[Path, Path], toy_ade: Path, tmp_path: Path):
    config, checkpoint = segmentor
    out = tmp_path / 'labels'
    result = run_test_tool(config, checkpoint, '--out', out, work_dir=tmp_path / 'w')
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'mIoU' in result.stdout + result.stderr
    images = sorted((toy_ade / 'ADEChallengeData2016' / 'images' / 'validation').iterdir())
    pngs = sorted(out.iterdir())
    assert [p.stem for p in pngs] == [p.stem for p in images]
    for png, image in zip(pngs, images):
        label, source = cv2.imread(str(png), cv2.IMREAD_UNCHANGED), cv2.imread(str(image))
        assert label.ndim == 2 and label.shape == source.shape[:2], png.name
        assert label.max() <= 150  # ADE20K's 150 classes (shifted back by one: reduce_zero_label)


@pytest.mark.slow
def test_segmentor_tta_runs_the_configs_tta_pipeline(segmentor: tuple[Path, Path], tmp_path: Path) -> None:
    """mmseg configs get tta_model (SegTTAModel) and tta_pipeline (scales × flips) from their bases."""
    config, checkpoint = segmentor
    plain, tta = tmp_path / 'plain', tmp_path / 'tta'
    first = run_test_tool(config, checkpoint, '--out', plain, work_dir=tmp_path / 'p')
    assert first.returncode == 0, first.stderr[-3000:]
    second = run_test_tool(config, checkpoint, '--tta', '--out', tta, work_dir=tmp_path / 't')
    assert second.returncode == 0, second.stderr[-3000:]
    assert 'SegTTAModel' in second.stdout + second.stderr and 'mIoU' in second.stdout + second.stderr
    differ = [
        p.name
        for p in sorted(plain.iterdir())
        if not np.array_equal(cv2.imread(str(p), cv2.IMREAD_UNCHANGED), cv2.imread(str(tta / p.name), -1))
    ]
    assert differ, 'TTA gave exactly the plain label maps'


def test_segmentor_show_dir_goes_where_the_help_says(segmentor: tuple[Path, Path], toy_ade: Path, tmp_path: Path):
    """--help: a segmentor writes SHOW_DIR/vis_data/vis_image/test_IMAGE_FILE_NAME_0.png, SHOW_DIR from the cwd."""
    config, checkpoint = segmentor
    command = [sys.executable, TEST_TOOL, str(config), str(checkpoint), '--work-dir', str(tmp_path / 'w')]
    env = checkout_env(OMP_NUM_THREADS='1')
    result = subprocess.run([*command, '--show-dir', 'shown'], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    images = sorted((toy_ade / 'ADEChallengeData2016' / 'images' / 'validation').iterdir())
    drawn = sorted((tmp_path / 'shown' / 'vis_data' / 'vis_image').iterdir())
    assert [p.name for p in drawn] == [f'test_{p.name}_0.png' for p in images]
    help_text = subprocess.run([sys.executable, TEST_TOOL, '--help'], capture_output=True, text=True, env=env).stdout
    assert 'SHOW_DIR/vis_data/vis_image/test_IMAGE_FILE_NAME_0.png' in ' '.join(help_text.split())


def test_show_without_a_display_is_refused(small_detector: tuple[Path, Path], tmp_path: Path) -> None:
    config, checkpoint = small_detector
    env = {k: v for k, v in checkout_env(OMP_NUM_THREADS='1').items() if k not in ('DISPLAY', 'WAYLAND_DISPLAY')}
    command = [sys.executable, TEST_TOOL, str(config), str(checkpoint), '--show', '--work-dir', str(tmp_path / 'w')]
    result = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert result.returncode == 1 and 'Traceback' not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        'error: --show needs a display (DISPLAY is not set): use --show-dir DIR to save the pictures'
    )
    assert not (tmp_path / 'w').exists()
