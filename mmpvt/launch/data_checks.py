"""Checks of the data files a run reads, before its first iteration instead of hours into it.

* :func:`check_data`: the data root, annotation file and image folders exist (else what the config
  reads and which keys to set; for the toy data roots, the command that writes them).
* :func:`check_train_data`, :func:`check_image_files`: the COCO annotation files are sound
  (:mod:`.coco_checks`) and their categories are the config's classes, the training set is not empty,
  every image and label map named exists and is not empty, every label map has its image's size and
  mode and holds only classes of the head and the ignore index (:mod:`.label_checks`).
* :func:`explain_failure`: errors met inside the Runner (a corrupt image, a pretrained file
  that does not fit) turned into a message naming the file.
"""

from __future__ import annotations

import inspect
import os
import os.path as osp
import re
import stat
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from mmengine.config import Config
from mmengine.runner import Runner

from ..datasets.wrappers import leaf_datasets
from . import ConfigError
from .checkpoints import checkpoint_shapes
from .class_checks import dataset_classes, dataset_type
from .coco_checks import check_annotation_files
from .distributed import on_rank_zero
from .label_checks import check_label_map, check_label_values, head_classes

#: The toy-data command, which an installed package has as well as a checkout.
TOY_DATA_COMMAND = 'python -m mmpvt.datasets'

#: dataset type -> the argument of :data:`TOY_DATA_COMMAND` that writes a toy set of its layout
TOY_KINDS = {'CocoDataset': 'coco', 'ADE20KDataset': 'ade'}


def _layout_hint(loader: str, dataset: Mapping[str, Any], root: str) -> str:
    """What the config reads under ``data_root`` and which keys to set; the toy-data command for a toy root."""
    parts = [f'ann_file {dataset["ann_file"]!r}'] if dataset.get('ann_file') else []
    prefixes = dataset.get('data_prefix') or {}
    parts += [f'data_prefix.{key} {value!r}' for key, value in prefixes.items() if isinstance(value, str)]
    hint = (
        f'; the config reads under data_root {root!r}: {", ".join(parts) or "nothing else"}. If your data are '
        f'elsewhere or named otherwise, set {loader}.dataset.data_root'
        + (', ann_file' if dataset.get('ann_file') else '')
        + (' and data_prefix' if prefixes else '')
        + ' (see docs/data.md)'
    )
    kind = TOY_KINDS.get(str(dataset.get('type')).rsplit('.', 1)[-1])
    target = root.rstrip('/')
    if kind is None or 'toy' not in target:  # the user's own data: no synthetic data written into it
        return hint
    if kind == 'ade' and osp.basename(target) == 'ADEChallengeData2016':
        target = osp.dirname(target)
    return hint + f'. To write the small synthetic dataset this config expects: {TOY_DATA_COMMAND} {kind} {target}'


def check_data(cfg: Config, loaders: Sequence[str]) -> None:
    """Check that the data root, annotation file and image folders of ``loaders`` exist.

    Raises:
        ConfigError: naming the missing path, what the config reads under its data root and the keys that
            set it (for a toy data root, the command that writes the toy data).
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
                        + _layout_hint(loader, dataset, root)
                    )


def check_train_data(runner: Runner) -> None:
    """Check the COCO annotation files, then build the training loop and refuse an empty training set.

    The annotation files of the training and validation sets (and of the evaluators) are
    checked by :func:`check_coco_file` first, on rank 0, so that mmdet never meets a
    truncated file, and their categories are compared with the config's classes. mmengine fails on
    an empty dataset with ``need at least one array to concatenate`` (or trains nothing); this names the
    cause instead: a segmentation folder without images of ``img_suffix``, or a COCO file without
    annotations of the classes left after the filter.

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
        raise ConfigError(f'the training dataset is empty: {_why_empty(runner.cfg)}')


def _suffix_counts(folder: str) -> Counter[str]:
    """How many files of each suffix lie under ``folder`` (recursively, as mmseg lists them)."""
    counts: Counter[str] = Counter()
    for _, _, files in os.walk(folder):
        counts.update(osp.splitext(name)[1] for name in files)
    return counts


def _why_empty(cfg: Config) -> str:
    """Why the first training dataset holds nothing: no image of its suffix (mmseg) or no annotation left (mmdet)."""
    leaf = leaf_datasets(cfg.train_dataloader.dataset)[0]
    root = leaf.get('data_root') or ''
    if not leaf.get('ann_file'):  # mmseg lists the image folder by suffix
        folder = osp.join(root, (leaf.get('data_prefix') or {}).get('img_path', ''))
        cls = dataset_type(cfg.default_scope, leaf)
        default = inspect.signature(cls).parameters.get('img_suffix') if cls is not None else None
        suffix = leaf.get('img_suffix', default.default if default is not None else None)
        counts = _suffix_counts(folder)
        if not counts:
            return f'the image folder {folder} holds no file; expected the images there (data_prefix.img_path)'
        found = ', '.join(f'{count} {ext or "(none)"!r}' for ext, count in counts.most_common(3))
        return (
            f'no file under {folder} ends in img_suffix {suffix!r} (found: {found}): set '
            f'train_dataloader.dataset.img_suffix={counts.most_common(1)[0][0]!r} (and seg_map_suffix to the '
            "label maps' suffix)"
        )
    listed = dataset_classes(cfg.default_scope, leaf)
    classes = f' of the classes {listed[0][:5]}' if listed else ''
    return (
        f'{leaf.get("ann_file")!r} under {root!r} has no image with annotations{classes} left after '
        f'filter_cfg={leaf.get("filter_cfg")}: the file holds none of them, or filter_cfg.min_size drops every box'
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


def _file_status(path: str) -> os.stat_result | None:
    """The ``stat`` of a regular file, None if there is none (one ``stat``, as ``osp.isfile``)."""
    try:
        status = os.stat(path)
    except (OSError, ValueError):
        return None
    return status if stat.S_ISREG(status.st_mode) else None


def _reduces_zero_label(dataset: Any, info: Mapping[str, Any]) -> bool:
    """Whether mmseg loads this set's label maps with ``reduce_zero_label`` (the pipeline's setting wins)."""
    for transform in getattr(getattr(dataset, 'pipeline', None), 'transforms', []):
        if getattr(transform, 'reduce_zero_label', None) is not None:
            return bool(transform.reduce_zero_label)
    return bool(info.get('reduce_zero_label'))


def _check_image_files(runner: Runner, max_listed: int) -> None:
    loops = [('training', runner.train_loop)]
    if runner.cfg.get('val_cfg') and runner.cfg.get('val_dataloader'):
        loops.append(('validation', runner.val_loop))
    classes = head_classes(runner.model)
    for split, loop in loops:
        for dataset in leaf_datasets(loop.dataloader.dataset):
            count = len(dataset) if hasattr(dataset, 'get_data_info') else 0
            missing, empty, label_maps, reduce_zero_label = [], [], [], False
            for info in (dataset.get_data_info(i) for i in range(count)):  # data_list is emptied once serialised
                paths = [info[key] for key in FILE_KEYS if isinstance(info.get(key), str) and '://' not in info[key]]
                status = [_file_status(path) for path in paths]
                missing += [path for path, found in zip(paths, status) if found is None]
                empty += [path for path, found in zip(paths, status) if found is not None and found.st_size == 0]
                if len(paths) == 2 and all(found is not None and found.st_size for found in status):
                    check_label_map(*paths)  # an image and its label map
                    label_maps.append((paths[1], status[1]))
                    reduce_zero_label = _reduces_zero_label(dataset, info)
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
            if classes is not None and not getattr(dataset, 'label_map', None):  # a label_map renumbers: batch check
                check_label_values(
                    label_maps, classes[0], ignore=classes[1], reduce_zero_label=reduce_zero_label, split=split
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
