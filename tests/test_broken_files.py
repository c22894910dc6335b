"""Broken files a user hands the tools end with one message naming the file, exit status 1.

Each case runs the real ``tools/train.py`` or ``tools/test.py`` as a subprocess on data the test writes
and damages: COCO annotation files, ADE20K label maps, images, config files, checkpoints and pretrained
files. Each asserts the exit status, the file named in the message, no traceback, and the user's files
unchanged (hashed before and after).
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TOY_CONFIGS, assert_refused, hashes, run_tool, small_config
from PIL import Image

pytestmark = pytest.mark.slow

TRAIN_JSON = 'annotations/instances_train2017.json'
ADE_LABELS = 'ADEChallengeData2016/annotations/training'

#: The toy Semantic FPN made small: depths (1, 1, 1, 1), 64-pixel inputs, one batch of all 8 images, 2 iterations.
ADE_CONFIG = """
_base_ = '{base}'
data_root = '{data_root}/ADEChallengeData2016'
loader = dict(num_workers=0, persistent_workers=False)
train_dataloader = dict(batch_size=8, **loader, dataset=dict(data_root=data_root))
val_dataloader = dict(batch_size=2, **loader, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
model = dict(data_preprocessor=dict(size=(64, 64)), backbone=dict(depths=(1, 1, 1, 1)))
train_cfg = dict(max_iters=2, val_interval=1000)
default_hooks = dict(checkpoint=dict(interval=1000))
"""


@pytest.fixture
def coco(toy_coco: Path, tmp_path: Path) -> Path:
    """A private copy of the toy COCO that a test may damage."""
    return Path(shutil.copytree(toy_coco, tmp_path / 'coco'))


@pytest.fixture
def ade(toy_ade: Path, tmp_path: Path) -> Path:
    """A private copy of the toy ADE20K that a test may damage."""
    return Path(shutil.copytree(toy_ade, tmp_path / 'ade'))


def train_coco(coco: Path, tmp_path: Path, *expected: str) -> str:
    """Train the small RetinaNet on ``coco``; assert it is refused with ``expected``; the files stay as they were."""
    config = small_config(tmp_path / 'cfg.py', coco, max_epochs=1)
    before = hashes(coco, config)
    message = assert_refused(run_tool('train.py', config, '--work-dir', tmp_path / 'work'), *expected)
    assert hashes(coco, config) == before
    return message


def edit_json(path: Path, change: Callable[[dict], None]) -> None:
    content = json.loads(path.read_text())
    change(content)
    path.write_text(json.dumps(content))


def test_truncated_annotation_file(coco: Path, tmp_path: Path) -> None:
    path = coco / TRAIN_JSON
    text = path.read_bytes()
    path.write_bytes(text[: len(text) // 2])
    train_coco(coco, tmp_path, f'{path} is not valid JSON at line 1, column', 'probably truncated', '"images"')


def first_box(content: dict, box: list[float]) -> None:
    content['annotations'][0]['bbox'] = box


BROKEN_COCO = {
    'image_without_file_name': (
        lambda c: c['images'][0].pop('file_name'),
        ["images[0] (id 1) has no 'file_name'", 'expected every entry of "images" to have id, file_name'],
    ),
    'no_categories': (lambda c: c.pop('categories'), ['no "categories" list']),
    'annotation_without_bbox': (
        lambda c: c['annotations'][0].pop('bbox'),
        ["annotations[0] (id 1, image_id 1) has no 'bbox'"],
    ),
    'negative_width': (
        lambda c: first_box(c, [10.0, 10.0, -20.0, 15.0]),
        ['annotations[0] (id 1, image_id 1) has bbox [10.0, 10.0, -20.0, 15.0] with a negative width or height'],
    ),
    'box_outside_the_image': (
        lambda c: first_box(c, [500.0, 10.0, 20.0, 20.0]),
        ['annotations[0] (id 1, image_id 1) has bbox [500.0, 10.0, 20.0, 20.0], which lies outside its image (64×64'],
    ),
    'unknown_category': (
        lambda c: c['annotations'][0].update(category_id=99),
        ['annotations[0] (id 1, image_id 1) has category_id 99, which is not in "categories"; expected one of [1, 2'],
    ),
    'repeated_annotation_id': (
        lambda c: c['annotations'][1].update(id=1),
        ['annotations[1] (id 1, image_id 1) repeats the id of an earlier annotation'],
    ),
    'unknown_image': (
        lambda c: c['annotations'][0].update(image_id=999),
        ['annotations[0] (id 1, image_id 999) names an image id that "images" lacks'],
    ),
}


@pytest.mark.parametrize('case', list(BROKEN_COCO))
def test_broken_coco_annotations(coco: Path, tmp_path: Path, case: str) -> None:
    change, expected = BROKEN_COCO[case]
    edit_json(coco / TRAIN_JSON, change)
    train_coco(coco, tmp_path, f'{coco / TRAIN_JSON}: ', *expected)


def test_box_slightly_outside_warns_and_trains(coco: Path, tmp_path: Path) -> None:
    """mmdet clips boxes to the image: a box 6 pixels past the border is warned about, not refused."""
    edit_json(coco / TRAIN_JSON, lambda c: first_box(c, [40.0, 40.0, 30.0, 20.0]))
    config = small_config(tmp_path / 'cfg.py', coco, max_epochs=1)
    result = run_tool('train.py', config, '--work-dir', tmp_path / 'work')
    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        f'{coco / TRAIN_JSON}: 1 box(es) reach more than 1 pixel past their image, first annotations[0] '
        '(id 1, image_id 1) bbox [40.0, 40.0, 30.0, 20.0] in a 64×64 image; mmdet clips them'
    ) in result.stdout + result.stderr


def train_ade(ade: Path, tmp_path: Path, *expected: str) -> str:
    """Train the small Semantic FPN on ``ade``; assert it is refused with ``expected``; the files stay as they were."""
    config = tmp_path / 'cfg.py'
    config.write_text(ADE_CONFIG.format(base=TOY_CONFIGS / 'fpn_pvt_t_toy_ade.py', data_root=ade))
    before = hashes(ade, config)
    message = assert_refused(run_tool('train.py', config, '--work-dir', tmp_path / 'work'), *expected)
    assert hashes(ade, config) == before
    return message


def test_label_map_of_another_size(ade: Path, tmp_path: Path) -> None:
    label = ade / ADE_LABELS / 'ADE_train_00000003.png'
    Image.open(label).resize((48, 40), Image.NEAREST).save(label)
    image = ade / 'ADEChallengeData2016/images/training/ADE_train_00000003.jpg'
    train_ade(
        ade, tmp_path, f'label map {label} is 48×40 pixels but its image {image} is 64×64; expected the same size'
    )


def test_colour_label_map(ade: Path, tmp_path: Path) -> None:
    label = ade / ADE_LABELS / 'ADE_train_00000002.png'
    Image.open(label).convert('RGB').save(label)
    train_ade(ade, tmp_path, f'label map {label} is a RGB image; expected an 8-bit single-channel PNG (mode L or P)')


def test_corrupt_label_map(ade: Path, tmp_path: Path) -> None:
    label = ade / ADE_LABELS / 'ADE_train_00000004.png'
    label.write_bytes(np.random.default_rng(0).bytes(3000))
    train_ade(ade, tmp_path, f'cannot decode image {label}: the file is corrupt or not an image')


def test_label_values_beyond_the_classes(ade: Path, tmp_path: Path) -> None:
    """200 is no ADE20K class (1..150) and not the ignore index 255; 255 itself is fine. Found before training."""
    label = ade / ADE_LABELS / 'ADE_train_00000005.png'
    values = np.array(Image.open(label))
    values[:2, :3] = 200
    values[-1, -1] = 255
    Image.fromarray(values).save(label)
    train_ade(
        ade,
        tmp_path,
        f'1 label map(s) of the training set hold values that are no class: {label}: [200]; expected 0 (other, '
        'ignored), 1..150 (the 150 classes of the head) or 255 (ignored)',
    )


def test_empty_image(coco: Path, tmp_path: Path) -> None:
    image = coco / 'train2017' / '000000000002.jpg'
    image.write_bytes(b'')
    train_coco(coco, tmp_path, f'1 file(s) of the training set are empty (0 bytes): {image}')


def test_corrupt_training_image(coco: Path, tmp_path: Path) -> None:
    image = coco / 'train2017' / '000000000002.jpg'
    image.write_bytes(np.random.default_rng(0).bytes(3000))
    train_coco(coco, tmp_path, f'cannot decode image {image}: the file is corrupt or not an image')


@pytest.fixture
def checkpoint(coco: Path, tmp_path: Path) -> tuple[Path, Path]:
    """The small RetinaNet config on ``coco`` and a checkpoint of its (untrained) model."""
    from mmdet.registry import MODELS
    from mmdet.utils import register_all_modules
    from mmengine.config import Config

    register_all_modules()
    config = small_config(tmp_path / 'cfg.py', coco, max_epochs=1)
    model = MODELS.build(Config.fromfile(str(config)).model)
    path = tmp_path / 'model.pth'
    torch.save({'meta': {}, 'state_dict': model.state_dict()}, path)
    return config, path


def test_corrupt_test_image(coco: Path, checkpoint: tuple[Path, Path], tmp_path: Path) -> None:
    image = coco / 'val2017' / '000000000003.jpg'
    image.write_bytes(np.random.default_rng(0).bytes(3000))
    before = hashes(coco, *checkpoint)
    result = run_tool('test.py', *checkpoint, '--work-dir', tmp_path / 'work')
    assert_refused(result, f'cannot decode image {image}: the file is corrupt or not an image')
    assert hashes(coco, *checkpoint) == before


def test_truncated_annotation_file_under_test(coco: Path, checkpoint: tuple[Path, Path], tmp_path: Path) -> None:
    path = coco / 'annotations' / 'instances_val2017.json'
    path.write_bytes(path.read_bytes()[:300])
    before = hashes(coco, *checkpoint)
    result = run_tool('test.py', *checkpoint, '--work-dir', tmp_path / 'work')
    assert_refused(result, f'{path} is not valid JSON', 'probably truncated')
    assert hashes(coco, *checkpoint) == before


def test_truncated_checkpoint_under_test(coco: Path, checkpoint: tuple[Path, Path], tmp_path: Path) -> None:
    config, path = checkpoint
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    before = hashes(coco, config, path)
    result = run_tool('test.py', config, path, '--work-dir', tmp_path / 'work')
    assert_refused(result, f'cannot read checkpoint {path}: the file is truncated or corrupt')
    assert hashes(coco, config, path) == before


def test_truncated_load_from(coco: Path, checkpoint: tuple[Path, Path], tmp_path: Path) -> None:
    config, path = checkpoint
    path.write_bytes(path.read_bytes()[:4000])
    with config.open('a') as f:
        f.write(f"load_from = '{path}'\n")
    before = hashes(coco, config, path)
    result = run_tool('train.py', config, '--work-dir', tmp_path / 'work')
    assert_refused(result, f'load_from: cannot read checkpoint {path}: the file is truncated or corrupt')
    assert hashes(coco, config, path) == before


@pytest.mark.parametrize('kind', ['truncated', 'another_model'])
def test_broken_pretrained_file(coco: Path, tmp_path: Path, kind: str) -> None:
    pretrained = tmp_path / 'pvt_tiny.pth'
    if kind == 'truncated':
        torch.save({'state_dict': {'w': torch.zeros(1000)}}, pretrained)
        pretrained.write_bytes(pretrained.read_bytes()[:500])
        expected = f'cannot read checkpoint {pretrained}: the file is truncated or corrupt'
    else:  # a ResNet stem's weights
        torch.save({'state_dict': {'conv1.weight': torch.zeros(64, 3, 7, 7), 'bn1.weight': torch.ones(64)}}, pretrained)
        expected = str(pretrained)
    config = small_config(tmp_path / 'cfg.py', coco, max_epochs=1)
    with config.open('a') as f:
        init_cfg = f"dict(_delete_=True, type='Pretrained', checkpoint='{pretrained}')"
        f.write(f'model.update(backbone=dict(depths=(1, 1, 1, 1), init_cfg={init_cfg}))\n')
    before = hashes(coco, config, pretrained)
    result = run_tool('train.py', config, '--work-dir', tmp_path / 'work')
    assert_refused(result, 'model.backbone.init_cfg (Pretrained): ', expected)
    assert hashes(coco, config, pretrained) == before


def test_config_with_a_syntax_error(tmp_path: Path) -> None:
    config = tmp_path / 'cfg.py'
    config.write_text("_base_ = 'base.py'\nmodel = dict(\n    backbone=dict(arch='tiny'\n    neck=None)\n")
    (tmp_path / 'base.py').write_text('default_scope = "mmdet"\n')
    before = hashes(tmp_path)
    assert_refused(run_tool('train.py', config), f"{config}, line 2: '(' was never closed: 'model = dict('")
    assert hashes(tmp_path) == before


def test_base_config_with_a_syntax_error(tmp_path: Path) -> None:
    config = tmp_path / 'cfg.py'
    config.write_text("_base_ = ['./base.py']\nx = 1\n")
    base = tmp_path / 'base.py'
    base.write_text('default_scope = "mmdet"\nmodel = dict(type="X",, y=1)\n')
    before = hashes(tmp_path)
    assert_refused(run_tool('train.py', config), f'{base}, line 2: ', 'model = dict(type="X",, y=1)')
    assert hashes(tmp_path) == before


def test_config_raising_an_error(tmp_path: Path) -> None:
    config = tmp_path / 'cfg.py'
    config.write_text("default_scope = 'mmdet'\nmodel = dict(type=retinanet)\n")
    before = hashes(tmp_path)
    assert_refused(run_tool('train.py', config), f"cannot read config {config}: NameError: name 'retinanet' is not")
    assert hashes(tmp_path) == before


def test_missing_base_config(tmp_path: Path) -> None:
    config = tmp_path / 'cfg.py'
    config.write_text("_base_ = './retinanet_base.py'\nx = 1\n")
    before = hashes(tmp_path)
    assert_refused(run_tool('train.py', config), f'{config}: file not found: ', 'retinanet_base.py')
    assert hashes(tmp_path) == before


def test_annotation_files_are_parsed_once_per_version(
    coco: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file that passed is not parsed again until it changes (COCO train2017 costs ~28 s to check)."""
    from mmengine.config import Config

    from mmpvt.launch import coco_checks as checks

    parsed = []
    monkeypatch.setattr(checks, 'PASSED_FILES', str(tmp_path / 'cache' / 'checked_files.json'))
    check = checks.check_coco_file
    monkeypatch.setattr(checks, 'check_coco_file', lambda path: parsed.append(path) or check(path))
    cfg = Config.fromfile(str(small_config(tmp_path / 'cfg.py', coco)))
    loaders = ('train_dataloader', 'val_dataloader')
    checks.check_annotation_files(cfg, loaders)
    assert sorted(parsed) == sorted(str(coco / f'annotations/instances_{s}2017.json') for s in ('train', 'val'))
    checks.check_annotation_files(cfg, loaders)
    assert len(parsed) == 2
    edit_json(coco / TRAIN_JSON, lambda c: c['images'][0].update(height=65))
    checks.check_annotation_files(cfg, loaders)
    assert parsed[2:] == [str(coco / TRAIN_JSON)]
