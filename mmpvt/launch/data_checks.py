"""Checks of the data files a run reads, before its first iteration instead of hours into it.

* :func:`check_data`: the data root, annotation file and image folders exist (else the
  expected layout and the command that writes toy data).
* :func:`check_train_data`, :func:`check_image_files`: the COCO annotation files are sound
  (:mod:`.coco_checks`), the training set is not empty, every image and label map named
  exists and is not empty, every label map has its image's size and mode.
* :func:`check_seg_labels`: a label-map value that is no class and not the ignore index
  stops the run at the batch that holds it (``LabelValuesHook``).
* :func:`explain_failure`: errors met inside the Runner (a corrupt image, a pretrained file
  that does not fit) turned into a message naming the file.
"""

from __future__ import annotations

import os
import os.path as osp
import re
import stat
from collections.abc import Mapping, Sequence
from typing import Any

from mmengine.config import Config
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner
from PIL import Image, UnidentifiedImageError
from torch import nn

from ..datasets.wrappers import leaf_datasets
from . import ConfigError
from .checkpoints import checkpoint_shapes
from .coco_checks import check_annotation_files
from .distributed import on_rank_zero

TOY_DATA_TOOL = 'tools/dataset_converters/make_toy_data.py'

#: dataset type -> (layout under data_root, argument of the toy-data tool)
DATASET_LAYOUTS = {
    'CocoDataset': (
        'annotations/instances_{train,val}2017.json, train2017/*.jpg and val2017/*.jpg (COCO 2017)',
        'coco',
    ),
    'ADE20KDataset': (
        'images/{training,validation}/*.jpg and annotations/{training,validation}/*.png (ADEChallengeData2016)',
        'ade',
    ),
}


def _toy_hint(dataset_type: str, data_root: str) -> str:
    if dataset_type not in DATASET_LAYOUTS:
        return ''
    layout, kind = DATASET_LAYOUTS[dataset_type]
    target = data_root.rstrip('/')
    if kind == 'ade' and osp.basename(target) == 'ADEChallengeData2016':
        target = osp.dirname(target)
    return (
        f'\nExpected layout under data_root: {layout}.'
        f'\nTo write a small synthetic dataset there: python {TOY_DATA_TOOL} {kind} {target}'
    )


def check_data(cfg: Config, loaders: Sequence[str]) -> None:
    """Check that the data root, annotation file and image folders of ``loaders`` exist.

    Raises:
        ConfigError: naming the missing path, the expected layout and the toy-data command.
    """
    for loader in loaders:
        if not cfg.get(loader):
            continue
        for dataset in leaf_datasets(cfg[loader]['dataset']):
            root = dataset.get('data_root') or ''
            paths = [root] if root else []
            if dataset.get('ann_file'):
                paths.append(osp.join(root, dataset['ann_file']))
            paths += [osp.join(root, p) for p in (dataset.get('data_prefix') or {}).values() if isinstance(p, str)]
            for path in paths:
                if not osp.exists(path):
                    raise ConfigError(
                        f'{loader}: {path} not found (dataset {dataset.get("type")}, data_root {root!r})'
                        + _toy_hint(str(dataset.get('type')), root)
                    )


def check_train_data(runner: Runner) -> None:
    """Check the COCO annotation files, then build the training loop and refuse an empty training set.

    The annotation files of the training and validation sets (and of the evaluators) are
    checked by :func:`check_coco_file` first, on rank 0, so that mmdet never meets a
    truncated file. mmengine fails on an empty dataset with ``need at least one array to
    concatenate`` (or trains nothing); this names the annotation file and the filter instead.

    Raises:
        ConfigError: an annotation file is broken, or the training dataset is empty.
    """
    on_rank_zero(check_annotation_files, runner.cfg, ('train_dataloader', 'val_dataloader'))
    try:
        size = len(runner.train_loop.dataloader.dataset)
    except ValueError as err:
        if 'need at least one array to concatenate' not in str(err):
            raise
        size = 0
    if size == 0:
        leaf = leaf_datasets(runner.cfg.train_dataloader.dataset)[0]
        raise ConfigError(
            f'the training dataset is empty: {leaf.get("ann_file")!r} under {leaf.get("data_root")!r} has no image '
            f'with annotations left after filter_cfg={leaf.get("filter_cfg")}; check the annotation file'
        )


#: Keys of a dataset's ``data_list`` entries that name files (mmdet: images; mmseg: images and label maps).
FILE_KEYS = ('img_path', 'seg_map_path')


def check_image_files(runner: Runner, max_listed: int = 5) -> None:
    """Refuse to start when an image or label map named by the training or validation set is missing.

    mmcv would only fail when the data loader reaches the file, possibly hours
    into a run. One ``stat`` per file (see docs/reliability.md for what COCO's 118k
    images cost), on rank 0 only: the other ranks wait for its verdict instead of
    sending the shared file system the same storm of metadata requests.

    Raises:
        ConfigError: how many files are missing, the first few by name, and the annotation file.
    """
    on_rank_zero(_check_image_files, runner, max_listed)


def _file_size(path: str) -> int:
    """The size of a regular file, -1 if there is none (one ``stat``, as ``osp.isfile``)."""
    try:
        status = os.stat(path)
    except (OSError, ValueError):
        return -1
    return status.st_size if stat.S_ISREG(status.st_mode) else -1


def _check_image_files(runner: Runner, max_listed: int) -> None:
    loops = [('training', runner.train_loop)]
    if runner.cfg.get('val_cfg') and runner.cfg.get('val_dataloader'):
        loops.append(('validation', runner.val_loop))
    for split, loop in loops:
        for dataset in leaf_datasets(loop.dataloader.dataset):
            count = len(dataset) if hasattr(dataset, 'get_data_info') else 0
            missing, empty = [], []
            for info in (dataset.get_data_info(i) for i in range(count)):  # data_list is emptied once serialised
                paths = [info[key] for key in FILE_KEYS if isinstance(info.get(key), str) and '://' not in info[key]]
                sizes = [_file_size(path) for path in paths]
                missing += [path for path, size in zip(paths, sizes) if size < 0]
                empty += [path for path, size in zip(paths, sizes) if size == 0]
                if len(paths) == 2 and min(sizes) > 0:  # an image and its label map
                    check_label_map(*paths)
            if empty:
                raise ConfigError(
                    f'{len(empty)} file(s) of the {split} set are empty (0 bytes): {", ".join(empty[:max_listed])}'
                    + (' ...' if len(empty) > max_listed else '')
                    + '; expected JPEG or PNG images (and label maps): an interrupted copy? Restore the files'
                )
            if missing:
                source = getattr(dataset, 'ann_file', '') or getattr(dataset, 'data_prefix', '')
                raise ConfigError(
                    f'{len(missing)} file(s) of the {split} set do not exist: {", ".join(missing[:max_listed])}'
                    + (' ...' if len(missing) > max_listed else '')
                    + f'; every image (and label map) listed by {source} must exist: '
                    'restore the files or remove their entries'
                )


#: PIL modes of a label map that mmseg reads as one 8-bit class index per pixel.
LABEL_MODES = ('L', 'P')

#: EXIF orientations for which OpenCV transposes a JPEG on decoding (its header size is then W×H swapped).
TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)


def _decoded_size(image: Image.Image) -> tuple[int, int]:
    """(W, H) of an image as OpenCV decodes it: EXIF rotations by 90° swap the header's size."""
    orientation = image.getexif().get(0x0112) if image.format == 'JPEG' else None
    return image.size[::-1] if orientation in TRANSPOSING_ORIENTATIONS else image.size


def check_label_map(img_path: str, seg_map_path: str) -> None:
    """Check a label map against its image from the two files' headers (no pixel is decoded).

    Raises:
        ConfigError: a file that is no image, a label map that is not 8-bit single-channel
            (mode L or P), or one of another size than its image.
    """
    try:
        with Image.open(img_path) as image, Image.open(seg_map_path) as label:
            size, label_size, mode = _decoded_size(image), label.size, label.mode
    except (UnidentifiedImageError, OSError) as err:
        name = getattr(err, 'filename', None) or (seg_map_path if seg_map_path in str(err) else img_path)
        raise ConfigError(
            f'cannot decode image {name}: the file is corrupt or not an image; expected a JPEG or PNG '
            '(replace it or remove it from the dataset)'
        ) from err
    if mode not in LABEL_MODES:
        raise ConfigError(
            f'label map {seg_map_path} is a {mode} image; expected an 8-bit single-channel PNG (mode L or P) holding '
            'one class index per pixel, not a colour picture: convert it (e.g. the palette index of each colour)'
        )
    if label_size != size:
        raise ConfigError(
            f'label map {seg_map_path} is {label_size[0]}×{label_size[1]} pixels but its image {img_path} is '
            f'{size[0]}×{size[1]}; expected the same size (was it exported at another resolution?)'
        )


def check_seg_labels(model: nn.Module, data_batch: Any) -> None:
    """Refuse a batch whose label maps hold a value that is neither a class nor the ignore index.

    Cheap (a comparison over the batch's labels), so it runs on every batch instead of
    decoding every label map at start-up. Values are reported as they are in the file
    (before ``reduce_zero_label`` subtracted one).

    Raises:
        ConfigError: naming the label map, the values and the valid range.
    """
    head = getattr(model.module if is_model_wrapper(model) else model, 'decode_head', None)
    num_classes, ignore = getattr(head, 'num_classes', None), getattr(head, 'ignore_index', 255)
    samples = data_batch.get('data_samples') if isinstance(data_batch, Mapping) else None
    if not isinstance(num_classes, int) or not samples:
        return
    for sample in samples:
        labels = getattr(getattr(sample, 'gt_sem_seg', None), 'data', None)
        if labels is None:
            continue
        bad = (labels >= num_classes) & (labels != ignore)
        if bool(bad.any()):
            reduced = bool(sample.metainfo.get('reduce_zero_label'))
            values = sorted({int(v) + reduced for v in labels[bad].unique()})
            valid = f'0 (other, ignored), 1..{num_classes}' if reduced else f'0..{num_classes - 1}'
            raise ConfigError(
                f'label map {sample.metainfo.get("seg_map_path")} holds value(s) {values[:10]} in {int(bad.sum())} '
                f'pixel(s); expected {valid} (the {num_classes} classes) or {ignore} (ignored)'
            )


def explain_failure(cfg: Config, err: Exception, loaders: tuple[str, ...]) -> ConfigError | None:
    """A message naming the file for an error the Runner met, or None when it is not about a file.

    Covers an image OpenCV cannot decode (mmcv's ``failed to load image: PATH``), a backbone
    ``Pretrained`` file that is unreadable or of another model (mmpvt's loader names it), an
    unreadable ``load_from`` checkpoint, and an annotation file mmdet could not parse (found
    again by :func:`check_annotation_files`). The files are only looked at once the run failed.
    """
    unreadable = re.search(r'failed to load image: (\S+)', str(err))
    if isinstance(err, AssertionError) and unreadable:
        return ConfigError(
            f'cannot decode image {unreadable.group(1)}: the file is corrupt or not an image; expected a JPEG or '
            'PNG that OpenCV can read (grey and RGBA images are fine): replace it or remove its annotation entry'
        )
    init_cfg = (cfg.get('model') or {}).get('backbone', {}).get('init_cfg') or []
    for item in init_cfg if isinstance(init_cfg, list) else [init_cfg]:
        path = item.get('checkpoint') if item.get('type') == 'Pretrained' else None
        if isinstance(err, ValueError | FileNotFoundError) and path and str(path) in str(err):
            return ConfigError(f'model.backbone.init_cfg (Pretrained): {err}')
    load_from = cfg.get('load_from')
    if isinstance(load_from, str) and '://' not in load_from and osp.isfile(load_from):
        try:
            checkpoint_shapes(load_from)  # the index only
        except ConfigError as found:
            return ConfigError(f'load_from: {found}')
    if isinstance(err, ValueError | KeyError | TypeError | IndexError):  # JSONDecodeError is a ValueError
        try:
            check_annotation_files(cfg, loaders)
        except ConfigError as found:
            return found
    return None
