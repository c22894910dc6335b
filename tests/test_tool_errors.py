"""A user's own mistakes, through every tool as a subprocess: exit status 1, one ``error:`` line naming the
file, key or value and the fix, no traceback, nothing written where nothing should be.

The data are the users': a two-class COCO set (blob, ring) and a copy of the toy ADE20K, written by the
tests in the real layouts. The checks themselves are tested at their edges in ``test_data_classes.py``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import (
    REPO,
    TOY_CONFIGS,
    assert_refused,
    logged_records,
    run_tool,
    save_checkpoint,
    small_config,
    two_class_coco,
)
from PIL import Image

#: The small toy RetinaNet on the two-class set, with the user's class names and head.
TWO_CLASSES = """
_base_ = '{small}'
metainfo = dict(classes={classes!r})
train_dataloader = dict(dataset=dict(metainfo=metainfo))
val_dataloader = dict(dataset=dict(metainfo=metainfo))
test_dataloader = val_dataloader
model = dict(bbox_head=dict(num_classes={num_classes}))
{extra}
"""


@pytest.fixture(scope='module')
def users_coco(toy_coco: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return two_class_coco(toy_coco, tmp_path_factory.mktemp('users') / 'shapes')


def users_config(folder: Path, data: Path, classes: tuple[str, ...], num_classes: int = 2, extra: str = '') -> Path:
    small = small_config(folder / 'small.py', data, max_epochs=1)
    config = folder / 'mine.py'
    config.write_text(TWO_CLASSES.format(small=small, classes=classes, num_classes=num_classes, extra=extra))
    return config


@pytest.fixture
def segmentor_checkpoint(tmp_path: Path) -> Path:
    path = tmp_path / 'fpn_segmentor.pth'
    save_checkpoint(TOY_CONFIGS / 'fpn_pvt_t_toy_ade.py', path)
    return path


def test_train_refuses_a_load_from_of_another_model(
    users_coco: Path, segmentor_checkpoint: Path, tmp_path: Path
) -> None:
    config = users_config(tmp_path, users_coco, ('blob', 'ring'), extra=f"load_from = '{segmentor_checkpoint}'")
    work_dir = tmp_path / 'work'
    result = run_tool('train.py', config, '--work-dir', work_dir)
    message = assert_refused(result, f'load_from: {segmentor_checkpoint} is not a checkpoint of this RetinaNet')
    assert 'it provides' in message and 'size mismatch' not in result.stdout + result.stderr
    assert not list(work_dir.rglob('*.pth')) and not logged_records(work_dir)  # no iteration, no checkpoint

    missing = users_config(tmp_path, users_coco, ('blob', 'ring'), extra=f"load_from = '{tmp_path / 'gone.pth'}'")
    assert_refused(run_tool('train.py', missing, '--work-dir', work_dir), 'load_from: checkpoint file not found: ')


def test_train_names_a_class_the_file_lacks(users_coco: Path, tmp_path: Path) -> None:
    config = users_config(tmp_path, users_coco, ('ball', 'ring'))
    result = run_tool('train.py', config, '--work-dir', tmp_path / 'work')
    assert_refused(result, "metainfo.classes lists 'ball' (did you mean 'blob'?)", 'instances_train2017.json')
    assert not logged_records(tmp_path / 'work')


def test_train_refuses_a_head_of_another_class_count_before_anything_is_written(
    users_coco: Path, tmp_path: Path
) -> None:
    config = users_config(tmp_path, users_coco, ('blob', 'ring'), num_classes=80)
    result = run_tool('train.py', config, '--work-dir', tmp_path / 'work')
    assert_refused(result, 'model.bbox_head.num_classes=80 but the data has 2 classes', 'model.bbox_head.num_classes=2')
    assert not (tmp_path / 'work').exists()
    fixed = run_tool('test.py', config, tmp_path / 'none.pth', '--cfg-options', 'model.bbox_head.num_classes=1')
    assert_refused(fixed, 'checkpoint file not found')  # test.py checks the file first, then the head
    head = users_config(tmp_path, users_coco, ('blob', 'ring'), num_classes=1)
    checkpoint = tmp_path / 'one_class.pth'
    save_checkpoint(head, checkpoint)
    result = run_tool('test.py', head, checkpoint, '--work-dir', tmp_path / 'test')
    assert_refused(result, 'model.bbox_head.num_classes=1 but the data has 2 classes', 'background index')


def test_train_refuses_a_label_value_before_the_first_iteration(toy_ade: Path, tmp_path: Path) -> None:
    data = Path(shutil.copytree(toy_ade, tmp_path / 'ade'))
    label = sorted((data / 'ADEChallengeData2016' / 'annotations' / 'training').iterdir())[2]
    pixels = np.array(Image.open(label))
    pixels[5:8, 5:8] = 200  # no class of ADE20K's 150 (reduce_zero_label: 200 becomes 199), not 255
    Image.fromarray(pixels).save(label)
    config = tmp_path / 'fpn.py'
    config.write_text(
        f"_base_ = '{TOY_CONFIGS / 'fpn_pvt_t_toy_ade.py'}'\n"
        f"data_root = '{data / 'ADEChallengeData2016'}'\n"
        'train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False, '
        'dataset=dict(data_root=data_root))\n'
        'val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root))\n'
        'test_dataloader = val_dataloader\n'
        'model = dict(backbone=dict(depths=(1, 1, 1, 1)))\n'
    )
    env_cache = tmp_path / 'cache'
    result = run_tool('train.py', config, '--work-dir', tmp_path / 'work', env={'XDG_CACHE_HOME': str(env_cache)})
    assert_refused(
        result, f'1 label map(s) of the training set hold values that are no class: {label}: [200]', 'num_classes'
    )
    assert not logged_records(tmp_path / 'work')  # stopped before the first iteration


# --- the other tools ------------------------------------------------------------------------------


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / 'street.png'
    Image.fromarray(np.full((96, 128, 3), 90, np.uint8)).save(path)
    return path


def test_vis_attention_mistakes(image: Path, segmentor_checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / 'attention.png'
    tool = 'analysis/vis_attention.py'
    result = run_tool(tool, image, '--arch', 'tiny', '--query', '500', '3', '--out', out)
    assert_refused(result, '--query: query pixel (x=500, y=3) is outside the 128×96 image')
    result = run_tool(tool, image, '--arch', 'tiny', '--size', '16', '16', '--out', out)
    assert_refused(result, f'{image} (16×16): input of 16×16 pixels is too small', 'at least 32')
    result = run_tool(tool, image, '--arch', 'small', '--checkpoint', segmentor_checkpoint, '--out', out)
    assert_refused(result, f'--checkpoint: {segmentor_checkpoint} does not fit this PVT', "PVT 'tiny'")
    result = run_tool(tool, image, '--config', tmp_path / 'nope.py', '--out', out)
    assert_refused(result, f'config file not found: {tmp_path / "nope.py"}')
    result = run_tool(tool, segmentor_checkpoint, '--arch', 'tiny', '--out', out)
    assert_refused(result, f'cannot decode image {segmentor_checkpoint}')
    assert not out.exists()


def test_get_flops_mistakes(tmp_path: Path) -> None:
    config = REPO / 'configs' / 'retinanet_pvt_t_fpn_1x_coco.py'
    assert_refused(run_tool('analysis/get_flops.py', tmp_path / 'x.py'), f'config file not found: {tmp_path}/x.py')
    result = run_tool('analysis/get_flops.py', '--arch', 'tiny', '--shape', '16', '16')
    assert_refused(result, '--shape 16 16: input of 16×16 pixels is too small for this PVT')
    result = run_tool('analysis/get_flops.py', config, '--cfg-options', 'model.backbone.arh=small')
    assert_refused(result, "model.backbone has no 'arh'; did you mean 'arch'?")
    result = run_tool('analysis/get_flops.py', '--arch', 'huge')
    assert result.returncode == 2 and "invalid choice: 'huge'" in result.stderr  # argparse's own usage error


@pytest.mark.slow  # trains one epoch: about 30 s
def test_load_from_of_another_class_count_fine_tunes(users_coco: Path, tmp_path: Path) -> None:
    """mmdet's fine-tuning path: a 4-class checkpoint of the same model into a 2-class head trains, with a warning
    naming the classifier tensors left at their initialisation."""
    four = small_config(tmp_path / 'four.py', users_coco)
    checkpoint = tmp_path / 'four_classes.pth'
    save_checkpoint(four, checkpoint)
    config = users_config(tmp_path, users_coco, ('blob', 'ring'), extra=f"load_from = '{checkpoint}'")
    result = run_tool('train.py', config, '--work-dir', tmp_path / 'work')
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert '2 classifier tensor(s) of the checkpoint were trained for another number of classes' in output
    assert 'bbox_head.retina_cls.weight: checkpoint (36, 32, 3, 3) vs model (18, 32, 3, 3)' in output
    assert list((tmp_path / 'work').glob('epoch_1.pth'))
