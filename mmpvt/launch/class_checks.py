"""The classes a run trains and tests: the config's class names, the annotation file's, and the heads' count.

Three mistakes that mmdet and mmseg accept without a word:

* :func:`check_class_names`: a name in ``metainfo.classes`` that the COCO file lacks (a typo) makes mmdet drop
  every annotation of the real category; without ``metainfo`` mmdet looks for COCO's 80 names in a file of
  other categories; listed names in another order than the file's categories get the wrong labels (mmdet
  numbers the categories it finds in the file's order). Refused, naming the names and the fix. A subset
  (every listed name in the file, some of the file's categories not listed) is a choice: a warning says how
  many annotations of the unlisted categories are left out.
* :func:`check_num_classes`: a head whose ``num_classes`` is not the number of classes of the data (80 or 1
  on 2-class data; with 1, a second class falls on the background index), refused with the setting to use.
"""

from __future__ import annotations

import difflib
import importlib
import logging
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from mmengine.config import Config
from mmengine.logging import print_log

from ..datasets.wrappers import leaf_datasets
from . import ConfigError

#: Heads whose ``num_classes`` is not the dataset's: a two-stage detector's RPN is class-agnostic (1), HTC's
#: semantic head predicts stuff classes.
OTHER_CLASS_SPACES = ('rpn_head', 'semantic_head')


def dataset_type(scope: str, dataset: Mapping[str, Any]) -> type | None:
    """The class a dataset config builds (through the registry of ``scope``), or None when unknown."""
    kind = dataset.get('type')
    if isinstance(kind, type):
        return kind
    if not isinstance(kind, str):
        return None
    try:
        registry = importlib.import_module(f'{scope}.registry').DATASETS
        return registry.get(kind)
    except (ImportError, KeyError):
        return None


def dataset_classes(scope: str, dataset: Mapping[str, Any]) -> tuple[tuple[str, ...], bool] | None:
    """(class names, whether the config lists them) of a dataset config, or None when neither says.

    The names are the config's ``metainfo.classes``, else those of the dataset type's ``METAINFO``
    (mmdet's ``CocoDataset``: COCO's 80; mmseg's ``ADE20KDataset``: ADE20K's 150).
    """
    metainfo = dataset.get('metainfo') or {}
    if isinstance(metainfo, Mapping) and metainfo.get('classes') is not None:
        return tuple(metainfo['classes']), True
    cls = dataset_type(scope, dataset)
    classes = getattr(cls, 'METAINFO', {}).get('classes') if cls is not None else None
    return (tuple(classes), False) if classes else None


def check_class_names(
    where: str,
    path: str,
    listed: tuple[tuple[str, ...], bool],
    categories: Mapping[str, int],
    *,
    dataset_type_name: str = 'CocoDataset',
) -> str | None:
    """Check a COCO dataset's class names against its annotation file's categories.

    Args:
        where: the dataset's place in the config (``train_dataloader.dataset``).
        path: the annotation file.
        listed: :func:`dataset_classes` of the dataset config.
        categories: the file's category names, in the file's order, with their numbers of annotations.
        dataset_type_name: the dataset class, for the message.

    Returns:
        The warning about annotations of unlisted categories left out, if any (also logged).

    Raises:
        ConfigError: listed names the file lacks, or listed in another order than the file's.
    """
    classes, in_config = listed
    names = list(categories)
    lacking = [name for name in classes if name not in categories]
    if lacking and not in_config:
        raise ConfigError(
            f'{where} has no metainfo, so mmdet looks for the {len(classes)} class names of {dataset_type_name} '
            f'({", ".join(classes[:3])}, ...) in {path}, whose categories are {names[:20]}: '
            f'{len(lacking)} of them are not there and the annotations of the others would be dropped. Set '
            f"{where}.metainfo=dict(classes={tuple(names)!r}) (and the heads' num_classes={len(names)})"
        )
    if lacking:
        guesses = [difflib.get_close_matches(name, names, n=1, cutoff=0.5) for name in lacking]
        hints = [f'{name!r} (did you mean {g[0]!r}?)' if g else repr(name) for name, g in zip(lacking, guesses)]
        raise ConfigError(
            f'{where}.metainfo.classes lists {", ".join(hints)}, which {path} lacks (its categories: {names[:20]}); '
            'mmdet would silently drop every annotation of a category that is not listed. Fix the name(s) in '
            'metainfo.classes'
        )
    found = [name for name in names if name in classes]
    if found != list(classes):
        raise ConfigError(
            f'{where}.metainfo.classes is {tuple(classes)!r} but {path} lists these categories in the order '
            f"{tuple(found)!r}; mmdet numbers the labels in the file's order, so the names would be wrong: set "
            f'{where}.metainfo=dict(classes={tuple(found)!r})'
        )
    left_out = {name: count for name, count in categories.items() if name not in classes and count}
    if not left_out:
        return None
    listing = ', '.join(f'{name} ({count})' for name, count in list(left_out.items())[:10])
    kinds = f'{len(left_out)} categor{"y" if len(left_out) == 1 else "ies"}'
    warning = (
        f'{where}: {sum(left_out.values())} annotation(s) of {kinds} of {path} not in metainfo.classes are '
        f'left out: {listing}'
    )
    print_log(warning, logger='current', level=logging.WARNING)
    return warning


def _heads(node: Any, path: str) -> Iterator[tuple[str, Any]]:
    """(``model.bbox_head.num_classes``-style key, value) of every head config under ``node`` that has one."""
    if isinstance(node, Mapping):
        name = path.rsplit('.', 1)[-1]
        # a head, or one stage of a list of heads (Cascade and Sparse R-CNN: model.roi_head.bbox_head.0)
        head = name.endswith('head') or (name.isdigit() and path.rsplit('.', 2)[-2].endswith('head'))
        if head and 'num_classes' in node and name not in OTHER_CLASS_SPACES:
            yield f'{path}.num_classes', node['num_classes']
        for key, value in node.items():
            if key not in ('train_cfg', 'test_cfg', 'init_cfg'):
                yield from _heads(value, f'{path}.{key}')
    elif isinstance(node, list | tuple):
        for index, item in enumerate(node):
            yield from _heads(item, f'{path}.{index}')


def head_num_classes(model: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """Every ``num_classes`` of the model's heads, by key: ``[('model.bbox_head.num_classes', 80), ...]``."""
    return list(_heads(model, 'model'))


def check_num_classes(cfg: Config, loaders: Sequence[str]) -> None:
    """Refuse heads whose ``num_classes`` differs from the number of classes of the data.

    The data's classes are those of the first dataset of the first loader among ``loaders`` that the config
    has (:func:`dataset_classes`).

    Raises:
        ConfigError: naming each head that disagrees and the ``--cfg-options`` that fix it.
    """
    scope = cfg.get('default_scope')
    found = None
    for loader in loaders:
        datasets = leaf_datasets((cfg.get(loader) or {}).get('dataset') or {}) if cfg.get(loader) else []
        if datasets:
            found = (f'{loader}.dataset', dataset_classes(scope, datasets[0]))
            break
    if found is None or found[1] is None:
        return
    where, (classes, in_config) = found
    wrong = [(key, value) for key, value in head_num_classes(cfg.get('model') or {}) if value != len(classes)]
    if not wrong:
        return
    source = f'{where}.metainfo.classes' if in_config else f"{where}'s class names (its type's METAINFO)"
    heads = ', '.join(f'{key}={value}' for key, value in wrong)
    fix = ' '.join(f'{key}={len(classes)}' for key, _ in wrong)
    fewer = any(isinstance(v, int) and v < len(classes) for _, v in wrong)
    harm = (
        ': the labels from num_classes up would fall on the background index or outside the classifier'
        if fewer
        else ': the extra outputs are trained as negatives and the metrics count classes the data lacks'
    )
    raise ConfigError(
        f'{heads} but the data has {len(classes)} classes ({source}: {", ".join(classes[:5])}'
        f'{", ..." if len(classes) > 5 else ""}){harm}. Set {fix} (--cfg-options {fix})'
    )
