"""Whether a checkpoint file reads and is one of the model: before a Runner loads it leniently.

:func:`checkpoint_shapes` reads only a checkpoint's index; :func:`checkpoint_non_finite` its tensors, for
inf and NaN; :func:`check_checkpoint_fits` applies
mmpvt's one fit check (:func:`mmpvt.checkpoint.checkpoint_fit`) to ``load_from``, ``--resume`` and
the checkpoint ``tools/test.py`` evaluates, so a checkpoint of another model is an error rather
than a model left mostly at its random initialisation.
"""

from __future__ import annotations

import os.path as osp
import zipfile
from collections.abc import Mapping

import torch
import torch.utils.serialization.config as serialization_config
from mmengine.model import is_model_wrapper
from torch import nn

from ..checkpoint import checkpoint_fit, extract_state_dict, load_file, non_finite_tensors
from . import ConfigError


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
) -> None:
    """Check that a checkpoint is one of ``model``: readable, and fitting by :func:`~mmpvt.checkpoint.checkpoint_fit`.

    Args:
        model: the built model, or the DDP-style wrapper around it.
        path: checkpoint file.
        shapes: the checkpoint's :func:`checkpoint_shapes` if they were read already (the file is not read again).

    Raises:
        ConfigError: unreadable file, or a checkpoint of another model (the mismatches named).
    """
    if shapes is None:
        shapes = checkpoint_shapes(path)
    if is_model_wrapper(model):
        model = model.module
    fit = checkpoint_fit(model, shapes)
    if not fit.fits:
        found = f"it provides {fit.matched} of the model's {fit.total} tensors"
        if fit.wrong_shapes:
            found += f'; shape mismatches: {", ".join(fit.wrong_shapes[:3])}'
        if fit.unknown:
            found += f'; tensors the model lacks: {", ".join(fit.unknown[:3])}'
        raise ConfigError(f'{path} is not a checkpoint of this {type(model).__name__}: {found}')
