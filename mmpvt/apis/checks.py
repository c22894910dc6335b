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
* :func:`check_train_data`, :func:`check_image_files`: an empty training set, or an
  image the annotations name but the disk lacks, stops the run before its first
  iteration instead of hours into it.
"""

from __future__ import annotations

import difflib
import glob
import inspect
import os.path as osp
import zipfile
from collections.abc import Mapping
from typing import Any

import torch
import torch.utils.serialization.config as serialization_config
from mmengine.config import Config
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner
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
    """Build the training loop now and refuse a training set without a single sample.

    mmengine fails on an empty dataset with ``need at least one array to concatenate``
    (or trains nothing); this names the annotation file and the filter instead.

    Raises:
        ConfigError: the training dataset is empty.
    """
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


def _check_image_files(runner: Runner, max_listed: int) -> None:
    loops = [('training', runner.train_loop)]
    if runner.cfg.get('val_cfg') and runner.cfg.get('val_dataloader'):
        loops.append(('validation', runner.val_loop))
    for split, loop in loops:
        for dataset in _leaf_datasets(loop.dataloader.dataset):
            infos = (dataset.get_data_info(i) for i in range(len(dataset))) if hasattr(dataset, 'get_data_info') else ()
            missing = [
                info[key]
                for info in infos  # data_list itself is emptied once serialised
                for key in FILE_KEYS
                if isinstance(info.get(key), str) and '://' not in info[key] and not osp.isfile(info[key])
            ]
            if missing:
                source = getattr(dataset, 'ann_file', '') or getattr(dataset, 'data_prefix', '')
                raise ConfigError(
                    f'{len(missing)} file(s) of the {split} set do not exist: {", ".join(missing[:max_listed])}'
                    + (' ...' if len(missing) > max_listed else '')
                    + f'; every image (and label map) listed by {source} must exist: '
                    'restore the files or remove their entries'
                )
