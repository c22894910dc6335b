"""COCO annotation files checked for what mmdet's ``CocoDataset`` needs, naming the entry that is not.

A file that passed is remembered (path, size, modification time) with its categories, so COCO
train2017's 448 MB are parsed once, not every run; each run compares its datasets' class names with
the remembered categories (:func:`~mmpvt.launch.class_checks.check_class_names`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import os.path as osp
from collections.abc import Mapping
from typing import Any, NamedTuple

from mmengine.config import Config
from mmengine.logging import print_log

from ..datasets.wrappers import leaf_datasets
from . import ConfigError
from .class_checks import check_class_names, dataset_classes

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


class CocoSummary(NamedTuple):
    """What :func:`check_coco_file` found in a file that passed."""

    #: the warning about boxes past the border, '' if none
    warning: str
    #: the category names in the file's order, each with its number of annotations
    categories: dict[str, int]


def check_coco_file(path: str) -> CocoSummary:
    """Check that a COCO annotation file is what mmdet's ``CocoDataset`` needs, naming the entry that is not.

    Refused: text that is not JSON (a truncated file); a missing ``images`` or ``categories``
    list; entries without the keys mmdet reads (:data:`COCO_KEYS`); images of no positive
    size; boxes that are not four numbers, of negative width or height, or wholly outside
    their image; annotations of an image or a category id the file does not list (mmdet
    would drop the last three silently); repeated annotation ids. Boxes reaching more than :data:`BOX_TOLERANCE`
    pixels past the border are warned about and trained on: mmdet clips them, and COCO's
    own boxes overshoot by rounding. ``annotations`` may be absent (test-dev image lists).

    Returns:
        The warning about boxes past the border, if any (also logged), and the file's categories.

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
    names = {category['id']: str(category['name']) for category in _check_entries(report, content, 'categories')}
    categories = set(names)
    counts = dict.fromkeys(names.values(), 0)
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
            counts[names[ann['category_id']]] += 1
            _check_box(report, index, ann, images[ann['image_id']])
    report.refuse()
    if not report.outside:
        return CocoSummary('', counts)
    warning = (
        f'{path}: {len(report.outside)} box(es) reach more than {BOX_TOLERANCE:g} pixel past their image, '
        f'first {report.outside[0]}; mmdet clips them to the image (training goes on)'
    )
    print_log(warning, logger='current', level=logging.WARNING)
    return CocoSummary(warning, counts)


def coco_datasets(cfg: Config, loaders: tuple[str, ...]) -> list[tuple[str, Mapping[str, Any], str]]:
    """(place in the config, dataset config, annotation file) of every COCO dataset of ``loaders``."""
    if cfg.get('default_scope') != 'mmdet':
        return []
    from mmdet.datasets import CocoDataset
    from mmdet.registry import DATASETS

    found = []
    for loader in loaders:
        leaves = leaf_datasets((cfg.get(loader) or {}).get('dataset') or {})
        for index, dataset in enumerate(leaves):
            cls = DATASETS.get(dataset.get('type')) if isinstance(dataset.get('type'), str) else dataset.get('type')
            if isinstance(cls, type) and issubclass(cls, CocoDataset) and dataset.get('ann_file'):
                where = f'{loader}.dataset' + (f' (dataset {index + 1} of {len(leaves)})' if len(leaves) > 1 else '')
                found.append((where, dataset, osp.join(dataset.get('data_root') or '', dataset['ann_file'])))
    return found


def coco_files(cfg: Config, loaders: tuple[str, ...]) -> list[str]:
    """The local COCO annotation files the datasets of ``loaders`` and their evaluators read, each once."""
    if cfg.get('default_scope') != 'mmdet':
        return []
    files = [path for _, _, path in coco_datasets(cfg, loaders)]
    for loader in loaders:
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
    """:func:`check_coco_file` for every COCO annotation file of ``loaders``, once per version of a file; then
    each COCO dataset's class names against its file's categories (:func:`check_class_names`).

    Parsing COCO train2017's 448 MB costs about as long as mmdet's own parse of it (see
    docs/reliability.md), so a file that passed is remembered with its categories by path, size and
    modification time in :data:`PASSED_FILES` (its warning, if any, is logged again); a changed file is
    checked again.

    Raises:
        ConfigError: a broken file, or class names that do not match the file's categories.
    """
    passed = _passed_files()
    changed = False
    summaries: dict[str, CocoSummary] = {}
    for path in coco_files(cfg, loaders):
        status = os.stat(path)
        key = f'{osp.realpath(path)}:{status.st_size}:{status.st_mtime_ns}'
        entry = passed.get(key)
        if isinstance(entry, dict) and isinstance(entry.get('categories'), dict):
            summary = CocoSummary(str(entry.get('warning') or ''), entry['categories'])
            if summary.warning:
                print_log(summary.warning, logger='current', level=logging.WARNING)
        else:  # new, changed, or remembered by an earlier version without its categories
            summary = check_coco_file(path)
            passed[key] = summary._asdict()
            changed = True
        summaries[osp.realpath(path)] = summary
    if changed:
        # Imported here: mmpvt.engine's hooks import these checks, so a module-level import would be a cycle.
        from ..engine.fileio import write_atomically

        try:
            latest = dict(list(passed.items())[-200:])  # the latest 200 files
            write_atomically(json.dumps(latest).encode(), PASSED_FILES)  # whole or absent when runs start side by side
        except OSError:
            pass  # only a cache: the next run checks again
    for where, dataset, path in coco_datasets(cfg, loaders):
        listed = dataset_classes('mmdet', dataset)
        summary = summaries.get(osp.realpath(path)) if osp.isfile(path) else None
        if listed and summary is not None:
            kind = dataset.get('type') if isinstance(dataset.get('type'), str) else 'CocoDataset'
            check_class_names(where, path, listed, summary.categories, dataset_type_name=str(kind))
