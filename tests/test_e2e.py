"""End to end on the CPU: each toy config trains a few iterations with the real Runner on toy
data, evaluates with the real metric, and its checkpoint run through tools/test.py gives the
same metrics and the same predictions."""

from __future__ import annotations

import json
import math
import pickle
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from helpers import REPO, checkout_env, logged_test_metrics, toy_config

from mmpvt.launch import main as launch

pytestmark = pytest.mark.slow

# config name -> (data fixture, metric keys that must be reported)
CASES = {
    'retinanet_pvt_t_fpn_toy_coco': ('toy_coco', ['coco/bbox_mAP', 'coco/bbox_mAP_50']),
    'retinanet_pvtv2_b0_fpn_toy_coco': ('toy_coco', ['coco/bbox_mAP', 'coco/bbox_mAP_50']),
    'mask_rcnn_pvt_t_fpn_toy_coco': ('toy_coco', ['coco/bbox_mAP', 'coco/segm_mAP']),
    'fpn_pvt_t_toy_ade': ('toy_ade', ['mIoU', 'aAcc']),
    'upernet_pvt_t_toy_ade': ('toy_ade', ['mIoU', 'aAcc']),
}


def short_schedule(cfg, dump_path: Path) -> str:
    """Two training iterations, then a validation that also dumps its predictions; returns the checkpoint name."""
    cfg.train_dataloader.batch_size = 4
    cfg.val_dataloader.batch_size = cfg.test_dataloader.batch_size = 2
    cfg.default_hooks.logger.interval = 1
    if cfg.default_scope == 'mmdet':  # 8 images / 4 = 2 iterations per epoch
        cfg.train_cfg.max_epochs = cfg.train_cfg.val_interval = cfg.default_hooks.checkpoint.interval = 1
        dump, checkpoint = 'DumpDetResults', 'epoch_1.pth'
    else:
        cfg.train_cfg.max_iters = cfg.train_cfg.val_interval = cfg.default_hooks.checkpoint.interval = 2
        dump, checkpoint = 'DumpResults', 'iter_2.pth'
    cfg.val_evaluator = [cfg.val_evaluator, dict(type=dump, out_file_path=str(dump_path))]
    # an untrained detector scores below the default threshold: keep its 20 best boxes to compare
    test_cfg = cfg.model.get('test_cfg') or {}
    for stage in (test_cfg, test_cfg.get('rcnn') or {}):
        if 'score_thr' in stage:
            stage.update(score_thr=0.0, max_per_img=20)
    return checkpoint


def predictions(path: Path) -> list[np.ndarray]:
    """The predicted boxes+scores+labels (detection) or label maps (segmentation) of a dump."""
    out = []
    for sample in pickle.loads(path.read_bytes()):
        if 'pred_instances' in sample:
            inst = sample['pred_instances']
            out += [np.asarray(inst['bboxes']), np.asarray(inst['scores']), np.asarray(inst['labels'])]
        else:
            out.append(np.asarray(sample['pred_sem_seg']['data']))
    return out


@pytest.mark.parametrize('name', list(CASES))
def test_train_then_test_gives_the_same_metrics(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    fixture, keys = CASES[name]
    cfg = toy_config(name, request.getfixturevalue(fixture), tmp_path / 'train')
    checkpoint = short_schedule(cfg, tmp_path / 'val_predictions.pkl')
    cfg.dump(str(tmp_path / 'config.py'))
    torch.manual_seed(0)

    trained = launch.train([str(tmp_path / 'config.py')])  # what tools/train.py runs, checks included
    (scalars,) = (tmp_path / 'train').glob('*/vis_data/scalars.json')
    losses = [json.loads(line)['loss'] for line in scalars.read_text().splitlines() if '"loss"' in line]
    assert losses and all(math.isfinite(loss) for loss in losses)
    assert set(keys) <= set(trained)
    assert (tmp_path / 'train' / checkpoint).is_file()
    (log,) = (tmp_path / 'train').glob('*/*.log')
    assert re.search(rf'final validation metrics: (\S+=\S+, )*{re.escape(keys[0])}=', log.read_text())

    # --out as mmdet's and mmseg's test.py take it: a pickle of predictions, or a folder of label PNGs
    out = tmp_path / ('test_predictions.pkl' if cfg.default_scope == 'mmdet' else 'test_labels')
    command = [sys.executable, 'tools/test.py', str(tmp_path / 'config.py'), str(tmp_path / 'train' / checkpoint)]
    command += ['--work-dir', str(tmp_path / 'test'), '--out', str(out)]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300, env=checkout_env())
    assert result.returncode == 0, result.stderr[-3000:]

    tested = logged_test_metrics(tmp_path / 'test')
    assert {k: tested[k] for k in keys} == {k: trained[k] for k in keys}
    if cfg.default_scope == 'mmseg':
        samples = pickle.loads((tmp_path / 'val_predictions.pkl').read_bytes())
        assert len(samples) == len(list(out.iterdir())) > 0
        for sample in samples:
            label = cv2.imread(str(out / f'{Path(sample["img_path"]).stem}.png'), cv2.IMREAD_UNCHANGED)
            # the PNGs hold ADE20K's label values: the predicted class + 1 (reduce_zero_label)
            np.testing.assert_array_equal(label, np.asarray(sample['pred_sem_seg']['data'])[0] + 1)
        return
    ours, theirs = predictions(tmp_path / 'val_predictions.pkl'), predictions(out)
    assert len(ours) == len(theirs) > 0
    for a, b in zip(ours, theirs):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-4)
