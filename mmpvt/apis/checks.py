"""Checks that turn silent misconfigurations into errors naming what is wrong.

* :func:`check_cfg_options`: mmengine's ``--cfg-options`` adds any key it is given, so
  a typo (``train_cfg.max_epoch=2``) would be silently ignored. A key that is a near
  miss of an existing one is refused with the closest names; new keys are accepted.
* :func:`check_neck_channels`: the neck's (or decode head's) ``in_channels`` must be
  the PVT's output channels, else the model fails deep in a convolution.
* :func:`check_work_dir`: a training run never overwrites another's checkpoints
  unless asked to resume.
* :func:`check_checkpoint_fits`: ``load_from``/``--resume`` of another model's
  checkpoint is an error, not a model left mostly at its random initialisation.
* :func:`check_train_data`, :func:`check_image_files`: an empty training set, a COCO
  annotation file that is not valid JSON or holds nonsense (missing keys, boxes of negative
  size, unknown categories), an image the annotations name but the disk lacks (or an empty
  one), a label map of another size or mode than expected stops the run before its first
  iteration instead of hours into it.
* :class:`LabelValuesHook`, :func:`check_seg_labels`: a label-map value that is no class
  and not the ignore index stops the run at the batch that holds it (decoding every label
  map up front would cost minutes on ADE20K).
* :func:`explain_failure`: errors met inside the Runner (a corrupt image, a pretrained file
  that does not fit) turned into a message naming the file.
"""

from __future__ import annotations

import ast
import difflib
import glob
import inspect
import json
import logging
import math
import os
import os.path as osp
import re
import stat
import zipfile
from collections.abc import Mapping
from typing import Any

import torch
import torch.utils.serialization.config as serialization_config
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner
from PIL import Image, UnidentifiedImageError
from torch import nn

from ..checkpoint import extract_state_dict, load_file
from ..models import PVT, PVTv2, PyramidVisionTransformer
from ..models.pvt import arch_kwargs
from .distributed import on_rank_zero


class ConfigError(ValueError):
    """A config or a file it names is not usable; the message says how to fix it."""


#: Top-level keys the Runner (or mmdet's and mmseg's tools) read besides the config's own.
RUNNER_KEYS = frozenset(inspect.signature(Runner.__init__).parameters) | {
    'find_unused_parameters',
    'auto_scale_lr',
    'runner_type',
    'custom_imports',
    'default_scope',
}


#: How alike (difflib's ratio) a new key and an existing one must be for the new one to count as a typo:
#: ``max_epoch``/``max_epochs`` 0.95, ``seeed``/``seed`` 0.89; ``drop_path_rate``/``drop_rate`` 0.78 is a new key.
TYPO_CUTOFF = 0.8


def _suggest(name: str, options: Any) -> str:
    close = difflib.get_close_matches(name, [str(o) for o in options], n=3, cutoff=TYPO_CUTOFF)
    return f'; did you mean {" or ".join(repr(c) for c in close)}?' if close else ''


def _child(node: Any, part: str) -> tuple[bool, Any]:
    """(found, value) of ``node[part]`` for a dict key or a list index."""
    if isinstance(node, Mapping):
        return (part in node, node.get(part))
    if isinstance(node, list | tuple) and part.lstrip('-').isdigit() and -len(node) <= int(part) < len(node):
        return True, node[int(part)]
    return False, None


def check_cfg_option(cfg: Config, key: str) -> None:
    """Refuse a ``--cfg-options`` key that is likely a typo of an existing one.

    mmengine adds keys it is given, and users rely on it (``train_dataloader.dataset.metainfo.classes``
    in mmdet's custom-dataset guide): a new key is accepted. A key whose first missing part is a
    near miss of a name that exists at that place (``max_epoch`` beside ``max_epochs``) would be
    a new, unused setting beside the one meant; it is refused with "did you mean". So is an index
    past the end of a list, or a path through a value that is not a dict or list.

    Raises:
        ConfigError: naming the missing part of the path, where it was looked up and the closest names.
    """
    parts = key.split('.')
    node: Any = cfg._cfg_dict if isinstance(cfg, Config) else cfg
    for depth, part in enumerate(parts):
        found, child = _child(node, part)
        if found:
            node = child
            continue
        where = '.'.join(parts[:depth]) or 'the config'
        if isinstance(node, list | tuple):
            raise ConfigError(
                f'--cfg-options {key}: {where} is a list of {len(node)}; expected an index from 0 to {len(node) - 1}, '
                f'got {part!r}'
            )
        if not isinstance(node, Mapping):
            raise ConfigError(
                f'--cfg-options {key}: {where} is {node!r} ({type(node).__name__}), not a dict: it has no {part!r}'
            )
        if depth == 0 and part in RUNNER_KEYS:
            return
        close = _suggest(part, list(node))
        if close:
            raise ConfigError(
                f'--cfg-options {key}: {where} has no {part!r}{close} (a new key {part!r} would be added beside '
                'it and probably never read)'
            )
        return  # a new key: mmengine adds it, as mmdet's and mmseg's tools do


def check_cfg_options(cfg: Config, cfg_options: Mapping[str, Any] | None) -> None:
    """:func:`check_cfg_option` for every key of parsed ``--cfg-options``."""
    for key in cfg_options or {}:
        check_cfg_option(cfg, key)


def pvt_out_channels(backbone: Mapping[str, Any]) -> tuple[int, ...] | None:
    """Channels a ``PVT``/``PVTv2`` backbone config will output, or None for another backbone."""
    classes = {'PVT': PVT, 'PVTv2': PVTv2}
    cls = classes.get(str(backbone.get('type', '')).rsplit('.', 1)[-1])
    if cls is None:
        return None
    arch = backbone.get('arch', inspect.signature(cls).parameters['arch'].default)
    embed_dims = arch_kwargs(arch, **{k: backbone[k] for k in ('embed_dims',) if k in backbone})['embed_dims']
    default = inspect.signature(PyramidVisionTransformer).parameters['out_indices'].default
    return tuple(embed_dims[i] for i in backbone.get('out_indices', default))


def check_neck_channels(cfg: Config) -> None:
    """Check that the module after a PVT backbone expects the PVT's output channels.

    That module is ``model.neck`` (mmdet's FPN, mmseg's FPN neck) or, without a neck,
    ``model.decode_head`` (mmseg's UPerNet).

    Raises:
        ConfigError: with both channel lists, or naming what is wrong with the backbone's settings.
    """
    model = cfg.get('model') or {}
    try:
        channels = pvt_out_channels(model.get('backbone') or {})
    except ValueError as err:  # unknown arch, per-stage tuples of different lengths
        raise ConfigError(f'model.backbone: {err}') from err
    if channels is None:
        return
    for name in ('neck', 'decode_head'):
        module = model.get(name)
        if not isinstance(module, Mapping) or 'in_channels' not in module:
            continue
        expected = module['in_channels']
        expected = list(expected) if isinstance(expected, list | tuple) else expected
        if expected != list(channels):
            raise ConfigError(
                f'model.{name}.in_channels={expected} but the {model.backbone.type} backbone '
                f'(arch {model.backbone.get("arch")!r}) outputs {list(channels)} channels: '
                f'set model.{name}.in_channels={list(channels)}'
            )
        return


def check_work_dir(work_dir: str) -> None:
    """Refuse to start a new training run in a work dir that holds another run's checkpoints.

    Raises:
        ConfigError: naming the directory and the options that would proceed.
    """
    found = sorted(glob.glob(osp.join(work_dir, '*.pth')))
    if osp.isfile(osp.join(work_dir, 'last_checkpoint')) or found:
        listing = ', '.join(osp.basename(p) for p in found[-3:]) or 'last_checkpoint'
        raise ConfigError(
            f'work dir {work_dir} already holds checkpoints of another run ({listing}); refusing to overwrite them. '
            f'Use --resume to continue that run (--resume PATH for a given checkpoint), or --work-dir NEW_DIR '
            f'to start a new one there'
        )


def checkpoint_shapes(path: str) -> dict[str, torch.Size]:
    """The names and shapes of a checkpoint's state-dict tensors, without reading the tensors.

    The file goes through :func:`mmpvt.checkpoint.load_file` (weights-only, mmengine's
    allow-list) with torch's memory-mapped loading: only the zip index and the pickled
    structure are read (a few hundred kB of a 150 MB training checkpoint); the tensors'
    bytes stay on disk. Files in torch's legacy format, which cannot be mapped, are read.

    Raises:
        ConfigError: the file is missing, unreadable, or holds no state dict.
    """
    mapped = {'load.mmap': zipfile.is_zipfile(path)} if osp.isfile(path) else {}
    try:
        with serialization_config.patch(mapped):
            checkpoint = load_file(path)
        return {k: v.shape for k, v in extract_state_dict(checkpoint, path).items()}
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(str(err)) from err


def check_checkpoint_fits(
    model: nn.Module,
    path: str,
    min_match: float = 0.5,
    *,
    shapes: Mapping[str, torch.Size] | None = None,
) -> None:
    """Check that a checkpoint is one of ``model``: readable, and most of its tensors fit.

    Args:
        model: the built model, or the DDP-style wrapper around it.
        path: checkpoint file.
        min_match: fraction of the model's tensors the checkpoint must provide with the right shape.
        shapes: the checkpoint's :func:`checkpoint_shapes` if they were read already (the file is not read again).

    Raises:
        ConfigError: unreadable file, or a checkpoint of another model (the mismatches named).
    """
    if shapes is None:
        shapes = checkpoint_shapes(path)
    if is_model_wrapper(model):
        model = model.module
    own = model.state_dict()
    wrong = [k for k, shape in shapes.items() if k in own and shape != own[k].shape]
    matched = sum(1 for k, shape in shapes.items() if k in own and shape == own[k].shape)
    if wrong or matched < min_match * len(own):
        detail = ', '.join(f'{k} {tuple(shapes[k])} vs {tuple(own[k].shape)}' for k in wrong[:3])
        raise ConfigError(
            f"{path} is not a checkpoint of this {type(model).__name__}: it provides {matched} of the model's "
            f'{len(own)} tensors' + (f'; shape mismatches: {detail}' if detail else '')
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
        dataset = runner.cfg.train_dataloader.dataset
        leaf = dataset.get('dataset', dataset)
        raise ConfigError(
            f'the training dataset is empty: {leaf.get("ann_file")!r} under {leaf.get("data_root")!r} has no image '
            f'with annotations left after filter_cfg={leaf.get("filter_cfg")}; check the annotation file'
        )


#: Keys of a dataset's ``data_list`` entries that name files (mmdet: images; mmseg: images and label maps).
FILE_KEYS = ('img_path', 'seg_map_path')


def _leaf_datasets(dataset: Any) -> list[Any]:
    """The datasets inside ``RepeatDataset`` / ``ClassBalancedDataset`` / ``ConcatDataset`` wrappers."""
    if hasattr(dataset, 'datasets'):
        return [leaf for child in dataset.datasets for leaf in _leaf_datasets(child)]
    if hasattr(dataset, 'dataset'):
        return _leaf_datasets(dataset.dataset)
    return [dataset]


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
        for dataset in _leaf_datasets(loop.dataloader.dataset):
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


#: Keys a COCO annotation file needs for mmdet, at the top and in each entry of its lists.
COCO_KEYS = {
    'images': ('id', 'file_name', 'height', 'width'),
    'annotations': ('id', 'image_id', 'category_id', 'bbox', 'area'),
    'categories': ('id', 'name'),
}

#: How far (pixels) a box may reach past the image border without a warning: COCO's own boxes do, by rounding.
BOX_TOLERANCE = 1.0


class _CocoFile:
    """What :func:`check_coco_file` found wrong in one file: the first problem of each kind, and counts."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.errors: list[str] = []
        self.outside: list[str] = []

    def entry(self, key: str, index: int, item: Mapping[str, Any]) -> str:
        detail = ', '.join(f'{k} {item[k]!r}' for k in ('id', 'image_id', 'file_name') if k in item)
        return f'{key}[{index}]' + (f' ({detail})' if detail else '')

    def refuse(self) -> None:
        if self.errors:
            more = f' (and {len(self.errors) - 1} more such problem(s) in the file)' if len(self.errors) > 1 else ''
            raise ConfigError(f'{self.path}: {self.errors[0]}{more}')


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _read_json(path: str) -> Any:
    with open(path, 'rb') as f:
        text = f.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        size = len(text)
        truncated = not text.rstrip().endswith((b'}', b']'))  # it ran out of text
        raise ConfigError(
            f'{path} is not valid JSON at line {err.lineno}, column {err.colno} (byte {err.pos} of {size}): {err.msg}'
            + ('; the file ends in the middle: it is probably truncated (an interrupted copy or download)' * truncated)
            + '. Expected a COCO annotation file: a JSON object with "images", "annotations" and "categories"'
        ) from err
    except UnicodeDecodeError as err:
        raise ConfigError(f'{path} is not a JSON text file ({err}); expected a COCO annotation file') from err


def _check_entries(report: _CocoFile, content: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    """The entries of ``content[key]`` that have every key of :data:`COCO_KEYS`; the others are reported."""
    entries = content.get(key, [])
    if not isinstance(entries, list):
        report.errors.append(f'"{key}" is a {type(entries).__name__}; expected a list')
        return []
    good = []
    for index, item in enumerate(entries):
        lacking = [k for k in COCO_KEYS[key] if k not in item] if isinstance(item, Mapping) else list(COCO_KEYS[key])
        if lacking:
            report.errors.append(
                f'{report.entry(key, index, item if isinstance(item, Mapping) else {})} has no '
                f'{", ".join(repr(k) for k in lacking)}; expected every entry of "{key}" to have '
                f'{", ".join(COCO_KEYS[key])}'
            )
        else:
            good.append(item)
    return good


def _check_box(report: _CocoFile, index: int, ann: Mapping[str, Any], image: Mapping[str, Any]) -> None:
    where = report.entry('annotations', index, ann)
    box = ann['bbox']
    if not (isinstance(box, list | tuple) and len(box) == 4 and all(_number(v) for v in box)):
        report.errors.append(f'{where} has bbox {box!r}; expected [x, y, width, height], four finite numbers')
        return
    x, y, w, h = box
    width, height = image['width'], image['height']
    if w < 0 or h < 0:
        report.errors.append(
            f'{where} has bbox {box} with a negative width or height; expected [x, y, width, height] with '
            'width, height >= 0 (COCO boxes are x, y, width, height, not x1, y1, x2, y2)'
        )
    elif w > 0 and h > 0 and (min(x + w, width) <= max(x, 0) or min(y + h, height) <= max(y, 0)):
        report.errors.append(
            f'{where} has bbox {box}, which lies outside its image ({width}×{height}, {image["file_name"]}); '
            'expected [x, y, width, height] within the image'
        )
    elif x < -BOX_TOLERANCE or y < -BOX_TOLERANCE or x + w > width + BOX_TOLERANCE or y + h > height + BOX_TOLERANCE:
        report.outside.append(f'{where} bbox {box} in a {width}×{height} image')


def check_coco_file(path: str) -> str | None:
    """Check that a COCO annotation file is what mmdet's ``CocoDataset`` needs, naming the entry that is not.

    Refused: text that is not JSON (a truncated file); a missing ``images`` or ``categories``
    list; entries without the keys mmdet reads (:data:`COCO_KEYS`); images of no positive
    size; boxes that are not four numbers, of negative width or height, or wholly outside
    their image; annotations of an image or a category id the file does not list (mmdet
    would drop the last three silently); repeated annotation ids. Boxes reaching more than :data:`BOX_TOLERANCE`
    pixels past the border are warned about and trained on: mmdet clips them, and COCO's
    own boxes overshoot by rounding. ``annotations`` may be absent (test-dev image lists).

    Returns:
        The warning about boxes past the border, if any (also logged).

    Raises:
        ConfigError: the file and the first broken entry, with what was expected.
    """
    content = _read_json(path)
    if not isinstance(content, Mapping):
        raise ConfigError(f'{path} holds a JSON {type(content).__name__}; expected a COCO annotation object')
    report = _CocoFile(path)
    for key in ('images', 'categories'):
        if key not in content:
            report.errors.append(f'no "{key}" list; expected a COCO annotation file with "{key}"')
    images = {image['id']: image for image in _check_entries(report, content, 'images')}
    categories = {category['id'] for category in _check_entries(report, content, 'categories')}
    for image in images.values():
        if not (_number(image['width']) and _number(image['height']) and image['width'] > 0 and image['height'] > 0):
            report.errors.append(
                f'image {image["file_name"]!r} (id {image["id"]!r}) has width {image["width"]!r}, height '
                f'{image["height"]!r}; expected positive sizes in pixels'
            )
    report.refuse()
    seen: set[Any] = set()
    for index, ann in enumerate(_check_entries(report, content, 'annotations')):
        if ann['id'] in seen:
            report.errors.append(
                f'{report.entry("annotations", index, ann)} repeats the id of an earlier annotation; '
                'expected unique annotation ids'
            )
        seen.add(ann['id'])
        if ann['image_id'] not in images:
            report.errors.append(f'{report.entry("annotations", index, ann)} names an image id that "images" lacks')
        elif ann['category_id'] not in categories:
            report.errors.append(
                f'{report.entry("annotations", index, ann)} has category_id {ann["category_id"]!r}, which is not in '
                f'"categories"; expected one of {sorted(categories, key=str)[:20]}'
            )
        else:
            _check_box(report, index, ann, images[ann['image_id']])
    report.refuse()
    if not report.outside:
        return None
    warning = (
        f'{path}: {len(report.outside)} box(es) reach more than {BOX_TOLERANCE:g} pixel past their image, '
        f'first {report.outside[0]}; mmdet clips them to the image (training goes on)'
    )
    print_log(warning, logger='current', level=logging.WARNING)
    return warning


def _dataset_cfgs(cfg: Any) -> list[Mapping[str, Any]]:
    """The leaf dataset configs inside wrapper configs (RepeatDataset, ConcatDataset...)."""
    if 'dataset' in cfg:
        return _dataset_cfgs(cfg['dataset'])
    if 'datasets' in cfg:
        return [leaf for child in cfg['datasets'] for leaf in _dataset_cfgs(child)]
    return [cfg]


def coco_files(cfg: Config, loaders: tuple[str, ...]) -> list[str]:
    """The local COCO annotation files the datasets of ``loaders`` and their evaluators read, each once."""
    if cfg.get('default_scope') != 'mmdet':
        return []
    from mmdet.datasets import CocoDataset
    from mmdet.registry import DATASETS

    files = []
    for loader in loaders:
        for dataset in _dataset_cfgs((cfg.get(loader) or {}).get('dataset') or {}):
            cls = DATASETS.get(dataset.get('type')) if isinstance(dataset.get('type'), str) else dataset.get('type')
            if isinstance(cls, type) and issubclass(cls, CocoDataset) and dataset.get('ann_file'):
                files.append(osp.join(dataset.get('data_root') or '', dataset['ann_file']))
        evaluators = cfg.get(loader.replace('_dataloader', '_evaluator')) or []
        for evaluator in evaluators if isinstance(evaluators, list) else [evaluators]:
            if str(evaluator.get('type', '')).endswith('CocoMetric') and evaluator.get('ann_file'):
                files.append(evaluator['ann_file'])
    local = [f for f in files if '://' not in f and osp.isfile(f)]
    return list({osp.realpath(f): f for f in local}.values())


#: Where :func:`check_annotation_files` remembers the files that passed, so that a file is parsed once, not every run.
PASSED_FILES = osp.join(os.environ.get('XDG_CACHE_HOME') or osp.expanduser('~/.cache'), 'mmpvt', 'checked_files.json')


def _passed_files() -> dict[str, Any]:
    try:
        with open(PASSED_FILES) as f:
            passed = json.load(f)
        return passed if isinstance(passed, dict) else {}
    except (OSError, ValueError):
        return {}


def check_annotation_files(cfg: Config, loaders: tuple[str, ...]) -> None:
    """:func:`check_coco_file` for every COCO annotation file of ``loaders``, once per version of a file.

    Parsing COCO train2017's 448 MB costs about as long as mmdet's own parse of it (see
    docs/reliability.md), so a file that passed is remembered by path, size and modification
    time in :data:`PASSED_FILES` (its warning, if any, is logged again); a changed file is checked again.
    """
    passed = _passed_files()
    changed = False
    for path in coco_files(cfg, loaders):
        status = os.stat(path)
        key = f'{osp.realpath(path)}:{status.st_size}:{status.st_mtime_ns}'
        if key in passed:
            if passed[key]:
                print_log(passed[key], logger='current', level=logging.WARNING)
            continue
        passed[key] = check_coco_file(path) or ''
        changed = True
    if changed:
        try:
            os.makedirs(osp.dirname(PASSED_FILES), exist_ok=True)
            temporary = f'{PASSED_FILES}.{os.getpid()}.tmp'
            with open(temporary, 'w') as f:
                json.dump(dict(list(passed.items())[-200:]), f)  # the latest 200 files
            os.replace(temporary, PASSED_FILES)  # whole or absent when runs start side by side
        except OSError:
            pass  # only a cache: the next run checks again


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


class LabelValuesHook(Hook):
    """:func:`check_seg_labels` on every training, validation and test batch of a segmentor."""

    priority = 'VERY_HIGH'

    def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        check_seg_labels(runner.model, data_batch)

    def before_val_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        check_seg_labels(runner.model, data_batch)

    def before_test_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        check_seg_labels(runner.model, data_batch)


def explain_config_error(path: str, err: Exception) -> ConfigError:
    """A message for a config (or one of its ``_base_`` files) that mmengine could not read.

    mmengine's SyntaxError names ``<unknown>`` for the file: the file is found by parsing
    ``path`` and the local ``_base_`` files it names, in order.
    """
    if isinstance(err, SyntaxError):
        culprit = _syntax_error_in(path) or err
        name = path if culprit.filename in (None, '<unknown>') else culprit.filename
        return ConfigError(
            f'{name}, line {culprit.lineno}: {culprit.msg}: {(culprit.text or "").strip()!r}; expected a Python '
            'config file (fix the line, or the one before it)'
        )
    if isinstance(err, FileNotFoundError) and err.filename:
        return ConfigError(
            f'{path}: file not found: {osp.normpath(err.filename)} (a _base_ or a file the config reads)'
        )
    return ConfigError(f'cannot read config {path}: {type(err).__name__}: {err}')


def _syntax_error_in(path: str, seen: frozenset[str] = frozenset()) -> SyntaxError | None:
    """The SyntaxError of ``path`` or of a local ``_base_`` file it names (recursively), with its file name."""
    if path in seen or not osp.isfile(path):
        return None
    with open(path, encoding='utf-8') as f:
        text = f.read()
    try:
        tree = ast.parse(text, filename=path)
    except SyntaxError as err:
        return err
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, 'id', None) == '_base_' for t in node.targets):
            try:
                bases = ast.literal_eval(node.value)
            except ValueError:
                return None
            for base in [bases] if isinstance(bases, str) else bases:
                if '::' not in base:
                    found = _syntax_error_in(osp.normpath(osp.join(osp.dirname(path), base)), seen | {path})
                    if found:
                        return found
    return None


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
