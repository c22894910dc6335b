"""The classes a run trains on, checked at their edges: class names against the COCO file, the heads'
``num_classes`` against the data, label-map values against the head, and every config's heads pinned.

In-process (fast): the checks of ``mmpvt.launch.class_checks``, ``coco_checks`` and ``label_checks`` on
files the tests write. The tools' side (exit status, one ``error:`` line) is in ``test_tool_errors.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from helpers import REPO, TOY_CONFIGS, small_config
from helpers import two_class_coco as make_two_class_coco
from mmengine.config import Config
from PIL import Image

from mmpvt.launch import ConfigError, coco_checks, label_checks
from mmpvt.launch.class_checks import check_class_names, check_num_classes, dataset_classes, head_num_classes
from mmpvt.launch.config_checks import check_cfg_options, check_neck_channels, load_config
from mmpvt.launch.label_checks import check_label_values, is_valid_value

TRAIN_JSON = 'annotations/instances_train2017.json'
COCO_80 = dataset_classes('mmdet', dict(type='CocoDataset'))[0]
FILE = {'blob': 5, 'ring': 3}  # a two-class file: category names in the file's order, annotations of each


# --- class names against the annotation file ----------------------------------------------------


def test_a_typo_in_the_class_names_is_refused_naming_the_real_one() -> None:
    with pytest.raises(ConfigError) as error:
        check_class_names('train_dataloader.dataset', 'a.json', (('ball', 'ring'), True), FILE)
    message = str(error.value)
    assert "metainfo.classes lists 'ball' (did you mean 'blob'?), which a.json lacks" in message
    assert "its categories: ['blob', 'ring']" in message and 'silently drop' in message


def test_without_metainfo_the_coco_names_are_named_as_the_cause() -> None:
    with pytest.raises(ConfigError) as error:
        check_class_names('train_dataloader.dataset', 'a.json', (COCO_80, False), FILE)
    message = str(error.value)
    assert 'train_dataloader.dataset has no metainfo, so mmdet looks for the 80 class names of CocoDataset' in message
    assert "Set train_dataloader.dataset.metainfo=dict(classes=('blob', 'ring'))" in message
    assert 'num_classes=2' in message


def test_classes_in_another_order_than_the_file_are_refused() -> None:
    with pytest.raises(ConfigError, match=r"in the order \('blob', 'ring'\); mmdet numbers the labels"):
        check_class_names('val_dataloader.dataset', 'a.json', (('ring', 'blob'), True), FILE)


def test_a_subset_is_a_warning_counting_what_is_left_out() -> None:
    warning = check_class_names('train_dataloader.dataset', 'a.json', (('blob',), True), FILE)
    assert warning == (
        'train_dataloader.dataset: 3 annotation(s) of 1 category of a.json not in metainfo.classes are left out: '
        'ring (3)'
    )
    assert check_class_names('d', 'a.json', (('blob', 'ring'), True), FILE) is None
    assert check_class_names('d', 'a.json', (('blob',), True), {'blob': 5, 'unused': 0}) is None


@pytest.fixture
def two_class_coco(toy_coco: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The toy COCO turned into a two-class set (blob, ring), with the check cache in tmp_path."""
    monkeypatch.setattr(coco_checks, 'PASSED_FILES', str(tmp_path / 'cache' / 'checked_files.json'))
    return make_two_class_coco(toy_coco, tmp_path / 'coco')


def two_class_config(root: Path, folder: Path, classes: tuple[str, ...] | None, num_classes: int = 2) -> Config:
    """The small toy RetinaNet reading ``root``, with ``classes`` as metainfo (None: no metainfo)."""
    cfg = Config.fromfile(str(small_config(folder / 'small.py', root)))
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.pop('metainfo', None)
        if classes is not None:
            cfg[loader].dataset.metainfo = dict(classes=classes)
    cfg.model.bbox_head.num_classes = num_classes
    return cfg


def test_the_file_check_compares_names_also_when_the_file_is_remembered(two_class_coco: Path, tmp_path: Path) -> None:
    loaders = ('train_dataloader', 'val_dataloader')
    coco_checks.check_annotation_files(two_class_config(two_class_coco, tmp_path, ('blob', 'ring')), loaders)
    remembered = json.loads((tmp_path / 'cache' / 'checked_files.json').read_text())
    assert next(entry['categories'] for entry in remembered.values()).keys() == {'blob', 'ring'}
    for _ in range(2):  # parsed, then from the cache: the same verdict
        with pytest.raises(ConfigError, match=r"lists 'ball' \(did you mean 'blob'\?\)"):
            coco_checks.check_annotation_files(two_class_config(two_class_coco, tmp_path, ('ball', 'ring')), loaders)
    with pytest.raises(ConfigError, match=r'has no metainfo, so mmdet looks for the 80 class names'):
        coco_checks.check_annotation_files(two_class_config(two_class_coco, tmp_path, None), loaders)


@pytest.mark.parametrize('box', [[1, 1, -3, 4], [1, 1, 4, -3], [1, 1, -3, -3]], ids=['width', 'height', 'both'])
def test_a_box_of_negative_width_or_height_is_refused(two_class_coco: Path, box: list[int]) -> None:
    path = two_class_coco / TRAIN_JSON
    content = json.loads(path.read_text())
    content['annotations'][0]['bbox'] = box
    path.write_text(json.dumps(content))
    with pytest.raises(ConfigError, match=r'with a negative width or height; expected \[x, y, width, height\]'):
        coco_checks.check_coco_file(str(path))


# --- num_classes against the data ---------------------------------------------------------------


@pytest.mark.parametrize('num_classes', [80, 1, 3])
def test_a_detection_head_of_another_class_count_is_refused_with_the_fix(
    two_class_coco: Path, tmp_path: Path, num_classes: int
) -> None:
    cfg = two_class_config(two_class_coco, tmp_path, ('blob', 'ring'), num_classes)
    with pytest.raises(ConfigError) as error:
        check_num_classes(cfg, ['train_dataloader'])
    message = str(error.value)
    assert message.startswith(f'model.bbox_head.num_classes={num_classes} but the data has 2 classes')
    assert 'train_dataloader.dataset.metainfo.classes: blob, ring' in message
    assert message.endswith('Set model.bbox_head.num_classes=2 (--cfg-options model.bbox_head.num_classes=2)')
    assert ('background index' in message) == (num_classes < 2)
    check_num_classes(two_class_config(two_class_coco, tmp_path, ('blob', 'ring'), 2), ['train_dataloader'])


def test_every_class_head_of_a_two_stage_detector_is_named_but_not_the_rpn() -> None:
    cfg = Config.fromfile(str(TOY_CONFIGS / 'mask_rcnn_pvt_t_fpn_toy_coco.py'))
    cfg.train_dataloader.dataset.metainfo = dict(classes=('blob', 'ring'))
    with pytest.raises(ConfigError) as error:
        check_num_classes(cfg, ['train_dataloader'])
    fix = 'Set model.roi_head.bbox_head.num_classes=2 model.roi_head.mask_head.num_classes=2'
    assert fix in str(error.value) and 'rpn_head' not in str(error.value)


def test_a_segmentation_head_of_another_class_count_names_decode_and_auxiliary_heads() -> None:
    cfg = Config.fromfile(str(TOY_CONFIGS / 'upernet_pvt_t_toy_ade.py'))
    cfg.train_dataloader.dataset.metainfo = dict(classes=('sky', 'road', 'car'))
    with pytest.raises(ConfigError) as error:
        check_num_classes(cfg, ['train_dataloader'])
    message = str(error.value)
    assert 'model.decode_head.num_classes=150, model.auxiliary_head.num_classes=150 but the data has 3' in message
    assert 'Set model.decode_head.num_classes=3 model.auxiliary_head.num_classes=3' in message


def test_head_walk_covers_stage_lists_and_skips_train_and_test_settings() -> None:
    model = dict(
        rpn_head=dict(num_classes=1),
        roi_head=dict(bbox_head=[dict(num_classes=5), dict(num_classes=5)], mask_head=dict(num_classes=5)),
        train_cfg=dict(rcnn=dict(num_classes=9)),
    )
    assert head_num_classes(model) == [
        ('model.roi_head.bbox_head.0.num_classes', 5),
        ('model.roi_head.bbox_head.1.num_classes', 5),
        ('model.roi_head.mask_head.num_classes', 5),
    ]


CONFIGS = sorted(p for p in (REPO / 'configs').rglob('*.py') if '_base_' not in p.parts)


@pytest.mark.parametrize('path', CONFIGS, ids=[str(p.relative_to(REPO / 'configs')) for p in CONFIGS])
def test_every_config_passes_our_checks_and_its_heads_are_pinned(path: Path) -> None:
    """Each config (DETR, DINO, Mask2Former included) reads through load_config; its heads agree with its data."""
    cfg = load_config(str(path))
    check_num_classes(cfg, ['train_dataloader'])
    check_num_classes(cfg, ['test_dataloader'])
    classes = {'mmdet': 4 if 'toy' in path.parts else 80, 'mmseg': 150}[cfg.default_scope]
    heads = head_num_classes(cfg.model)
    assert heads and {value for _, value in heads} == {classes}, heads
    if cfg.default_scope == 'mmseg':
        assert heads[0][0] == 'model.decode_head.num_classes'


# --- --cfg-options and neck edges ---------------------------------------------------------------


def test_a_top_level_cfg_options_typo_is_refused() -> None:
    cfg = Config.fromfile(str(TOY_CONFIGS / 'retinanet_pvt_t_fpn_toy_coco.py'))
    with pytest.raises(ConfigError, match=r"the config has no 'trian_cfg'; did you mean 'train_cfg'\?"):
        check_cfg_options(cfg, {'trian_cfg.max_epochs': 2})
    check_cfg_options(cfg, {'train_cfg.max_epochs': 2, 'my_new_key': 1})  # a new key is accepted


def test_neck_check_follows_a_non_default_out_indices() -> None:
    cfg = Config.fromfile(str(TOY_CONFIGS / 'retinanet_pvt_t_fpn_toy_coco.py'))
    cfg.model.backbone.out_indices = (1, 2, 3)
    with pytest.raises(ConfigError, match=r'outputs \[128, 320, 512\] channels: set model.neck.in_channels'):
        check_neck_channels(cfg)
    cfg.model.neck.in_channels = [128, 320, 512]
    check_neck_channels(cfg)


# --- label-map values against the head ----------------------------------------------------------


@pytest.mark.parametrize(
    ('value', 'reduce', 'valid'),
    [
        (149, False, True),  # the last class
        (150, False, False),  # exactly num_classes
        (255, False, True),  # the ignore index
        (254, False, False),
        (0, True, True),  # reduced to 255: ignored
        (150, True, True),  # reduced to 149: the last class
        (151, True, False),  # reduced to 150: exactly num_classes
        (255, True, True),  # stays 255
    ],
)
def test_label_values_at_the_edges(value: int, reduce: bool, valid: bool) -> None:
    assert is_valid_value(value, 150, 255, reduce) is valid


def write_label_maps(folder: Path, values: list[int]) -> list[tuple[str, object]]:
    folder.mkdir(exist_ok=True)
    maps = []
    for index, value in enumerate(values):
        pixels = np.ones((16, 16), np.uint8)
        pixels[3, 5] = value
        path = folder / f'{index}.png'
        Image.fromarray(pixels).save(path)
        maps.append((str(path), path.stat()))
    return maps


def test_label_values_are_checked_before_training_and_remembered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(label_checks, 'LABEL_VALUES_CACHE', str(tmp_path / 'cache.json'))
    good = write_label_maps(tmp_path / 'good', [0, 2, 3, 255])
    check_label_values(good, 4, reduce_zero_label=False)
    decoded = []
    monkeypatch.setattr(label_checks, 'label_values', lambda path: decoded.append(path) or [0])
    check_label_values(good, 4, reduce_zero_label=False)  # unchanged maps: the remembered values
    assert decoded == []
    monkeypatch.undo()
    monkeypatch.setattr(label_checks, 'LABEL_VALUES_CACHE', str(tmp_path / 'cache.json'))
    with pytest.raises(ConfigError) as error:  # a smaller head: the remembered values compared again
        check_label_values(good, 3, reduce_zero_label=False)
    message = str(error.value)
    assert f'1 label map(s) of the training set hold values that are no class: {good[2][0]}: [3]' in message
    assert 'expected 0..2 (the 3 classes of the head) or 255 (ignored)' in message
    assert 'set model.decode_head.num_classes' in message


def test_a_label_exactly_at_num_classes_is_refused_as_in_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(label_checks, 'LABEL_VALUES_CACHE', str(tmp_path / 'cache.json'))
    maps = write_label_maps(tmp_path / 'maps', [0, 150, 151])
    with pytest.raises(ConfigError) as error:
        check_label_values(maps, 150, reduce_zero_label=True, split='validation')
    message = str(error.value)
    assert f'1 label map(s) of the validation set hold values that are no class: {maps[2][0]}: [151]' in message
    assert 'expected 0 (other, ignored), 1..150 (the 150 classes of the head) or 255' in message


def test_a_batch_with_a_label_beyond_the_head_names_the_head_too() -> None:
    """The per-batch backstop (test sets, datasets with a label_map) says the head may be what is too small."""
    import torch
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    from mmpvt.launch.label_checks import check_seg_labels

    sample = SegDataSample(metainfo=dict(seg_map_path='a.png', reduce_zero_label=False))
    sample.gt_sem_seg = PixelData(data=torch.tensor([[[0, 2, 3, 255]]]))
    segmentor = SimpleNamespace(decode_head=SimpleNamespace(num_classes=3, ignore_index=255))
    with pytest.raises(ConfigError) as error:
        check_seg_labels(segmentor, dict(data_samples=[sample]))
    message = str(error.value)
    assert message.startswith('label map a.png holds value(s) [3] in 1 pixel(s); expected 0..2 (the 3 classes')
    assert 'the head is too small for the data: set model.decode_head.num_classes' in message
    sample.gt_sem_seg = PixelData(data=torch.tensor([[[0, 2, 255]]]))
    check_seg_labels(segmentor, dict(data_samples=[sample]))
