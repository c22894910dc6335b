"""Whether a checkpoint file reads and is one of the model: before a Runner loads it leniently.

:func:`checkpoint_shapes` reads only a checkpoint's index; :func:`checkpoint_non_finite` its tensors, for
inf and NaN; :func:`check_checkpoint_fits` applies mmpvt's one fit check (:func:`mmpvt.checkpoint.checkpoint_fit`)
to ``load_from``, ``--resume``, the checkpoint ``tools/test.py`` evaluates and those the demo and the export load
(:func:`load_checked`), so a checkpoint of another model is an error rather than a model left mostly at its random
initialisation.
"""

from __future__ import annotations

import logging
import os.path as osp
import zipfile
from collections.abc import Mapping
from typing import Any

import torch
import torch.utils.serialization.config as serialization_config
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from torch import nn

from ..checkpoint import (
    checkpoint_fit,
    extract_state_dict,
    load_file,
    missing_checkpoint,
    non_finite_tensors,
    variant_hint,
)
from . import ConfigError
from .distributed import on_rank_zero


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


def checkpoint_non_finite(path: str) -> list[str]:
    """The tensors of a checkpoint (model and optimizer state) that hold inf or NaN; empty if none.

    The file is memory-mapped as in :func:`checkpoint_shapes`, but every tensor's bytes are read: on the
    rank that resumes, they stay in the page cache for mmengine's load that follows.

    Raises:
        ConfigError: the file is missing or unreadable.
    """
    mapped = {'load.mmap': zipfile.is_zipfile(path)} if osp.isfile(path) else {}
    try:
        with serialization_config.patch(mapped):
            checkpoint = load_file(path)
    except (FileNotFoundError, ValueError) as err:
        raise ConfigError(str(err)) from err
    if isinstance(checkpoint, Mapping) and 'state_dict' in checkpoint:
        optimizer = [f'optimizer.{name}' for name in non_finite_tensors(checkpoint.get('optimizer') or {})]
        return non_finite_tensors(checkpoint['state_dict']) + optimizer
    return non_finite_tensors(checkpoint)


def check_checkpoint_fits(
    model: nn.Module,
    path: str,
    *,
    shapes: Mapping[str, torch.Size] | None = None,
    fine_tune: bool = False,
) -> None:
    """Check that a checkpoint is one of ``model``: readable, and fitting by :func:`~mmpvt.checkpoint.checkpoint_fit`.

    Args:
        model: the built model, or the DDP-style wrapper around it.
        path: checkpoint file.
        shapes: the checkpoint's :func:`checkpoint_shapes` if they were read already (the file is not read again).
        fine_tune: the checkpoint starts a training run (``load_from``): classifiers trained for another number
            of classes are allowed (they stay at their initialisation, with a warning naming them), as mmdet's and
            mmseg's fine-tuning guides do with a COCO or ADE20K checkpoint. Everything else must fit.

    Raises:
        ConfigError: unreadable file, or a checkpoint of another model (the mismatches named).
    """
    if shapes is None:
        shapes = checkpoint_shapes(path)
    if is_model_wrapper(model):
        model = model.module
    fit = checkpoint_fit(model, shapes)
    if fit.fits:
        return
    if fine_tune and fit.fits_but_classes:
        print_log(
            f'{path}: {len(fit.class_layers)} classifier tensor(s) of the checkpoint were trained for another number '
            f'of classes and stay at their initialisation (fine-tuning): {"; ".join(fit.wrong_shapes[:4])}',
            logger='current',
            level=logging.WARNING,
        )
        return
    found = f"it provides {fit.matched} of the model's {fit.total} tensors"
    if fit.wrong_shapes:
        found += f'; shape mismatches: {", ".join(fit.wrong_shapes[:3])}'
    if fit.unknown:
        found += f'; tensors the model lacks: {", ".join(fit.unknown[:3])}'
    if fit.fits_but_classes:
        found += (
            ". Only the classifiers differ: was it trained with another num_classes? Set the head's num_classes to "
            "the checkpoint's, or fine-tune it on this data with load_from (tools/train.py)"
        )
    hint = variant_hint(model, shapes)
    raise ConfigError(f'{path} is not a checkpoint of this {type(model).__name__}: {found}.{hint}')


def load_checked(model: nn.Module, path: str, *, fine_tune: bool = False) -> dict[str, Any]:
    """Load a whole-model checkpoint into ``model`` once :func:`check_checkpoint_fits` passed; the checkpoint.

    The tools that build a model from a config themselves (the demo, the ONNX export) load through this, so
    a checkpoint of another model is refused instead of loaded leniently.

    Raises:
        ConfigError: unreadable file, or a checkpoint of another model.
    """
    from mmengine.runner import load_checkpoint

    check_checkpoint_fits(model, path, fine_tune=fine_tune)
    return load_checkpoint(model, path, map_location='cpu', strict=False)


def local_load_from(cfg: Mapping[str, Any]) -> str | None:
    """The config's ``load_from`` when it starts a new run from a local file (not ``--resume``, not a URL)."""
    path = cfg.get('load_from')
    if not isinstance(path, str) or not path or cfg.get('resume') or '://' in path:
        return None
    return path


def check_load_from(model: nn.Module, cfg: Mapping[str, Any]) -> None:
    """Check the config's ``load_from`` against the model (:func:`check_checkpoint_fits` with ``fine_tune``).

    mmengine would load a checkpoint of another model leniently, printing its size mismatches, and train.
    Rank 0 reads the checkpoint's index; every rank gets its shapes.

    Raises:
        ConfigError: ``load_from: ...``, the file missing, unreadable or of another model.
    """
    path = local_load_from(cfg)
    if path is None:
        return
    try:
        if not osp.isfile(path):
            raise ConfigError(missing_checkpoint(path))
        check_checkpoint_fits(model, path, shapes=on_rank_zero(checkpoint_shapes, path), fine_tune=True)
    except ConfigError as err:
        raise ConfigError(f'load_from: {err}') from err
