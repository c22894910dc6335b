"""Surviving crashes: atomic checkpoints, a readable checkpoint to resume from, reproducible resumes.

* :class:`AtomicLocalBackend` (registered as mmengine file backend ``'atomic_local'``)
  writes each checkpoint to a temporary file in the same directory, flushes it to
  disk and renames it over the target, so a killed process leaves either the old
  file or the new one, never half of one.
* :func:`readable_checkpoint` picks the checkpoint ``--resume`` continues
  from: the one mmengine's ``last_checkpoint`` names if it reads, else the newest
  ``epoch_*.pth`` / ``iter_*.pth`` that does, with a warning naming each bad file.
  Only each file's index is read (:func:`~mmpvt.apis.checks.checkpoint_shapes`), and
  in a distributed run only rank 0 reads (:func:`choose_resume_checkpoint`).
* :class:`ResumableRandomnessHook` reseeds the global random generators from
  (seed, epoch) before each epoch and torch's from (seed, iteration) before each
  step, so an epoch-based run resumed at an epoch boundary draws the same random
  numbers (augmentation, drop path) as one that was never interrupted.
"""

from __future__ import annotations

import glob
import os
import os.path as osp
import random
import re
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from mmengine.fileio import LocalBackend, register_backend
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from .checks import ConfigError, checkpoint_shapes
from .distributed import on_rank_zero

#: What ``CheckpointHook`` names its files (mmengine's default ``filename_tmpl``).
CHECKPOINT_NAME = re.compile(r'(epoch|iter)_(\d+)\.pth$')


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend whose ``put`` replaces the target atomically."""

    def put(self, obj: bytes, filepath: str | Path) -> None:
        """Write ``obj`` to a temporary file beside ``filepath``, fsync it, then rename it over ``filepath``."""
        directory = osp.dirname(osp.abspath(filepath))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f'.{osp.basename(filepath)}.', suffix='.tmp', dir=directory)
        try:
            os.fchmod(fd, _new_file_mode())  # mkstemp makes 0600; a plain open() honours the umask
            with os.fdopen(fd, 'wb') as f:
                f.write(obj)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, filepath)
        except BaseException:
            if osp.exists(tmp):
                os.remove(tmp)
            raise


def _new_file_mode() -> int:
    """The mode ``open(path, 'w')`` gives a new file: 0o666 less the process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


register_backend('atomic_local', AtomicLocalBackend, force=True)


def use_atomic_checkpoints(cfg: Any) -> None:
    """Make the config's ``CheckpointHook`` write through :class:`AtomicLocalBackend`.

    Left alone: a config without a checkpoint hook, one that already chooses a
    backend (``backend_args`` or ``file_client_args``), or a remote ``out_dir``.
    """
    hook = (cfg.get('default_hooks') or {}).get('checkpoint')
    if not hook or hook.get('backend_args') or hook.get('file_client_args'):
        return
    if '://' in str(hook.get('out_dir') or ''):
        return
    hook['backend_args'] = dict(backend='atomic_local')


def _step_of(path: str) -> int:
    match = CHECKPOINT_NAME.search(osp.basename(path))
    return int(match.group(2)) if match else -1


def _candidates(work_dir: str) -> list[str]:
    """``last_checkpoint``'s target first, then every epoch_*/iter_* file, newest first."""
    named = []
    pointer = osp.join(work_dir, 'last_checkpoint')
    if osp.isfile(pointer):
        with open(pointer) as f:
            target = f.read().strip()
        if target:
            named.append(target)
    found = [p for p in glob.glob(osp.join(work_dir, '*.pth')) if CHECKPOINT_NAME.search(osp.basename(p))]
    found.sort(key=lambda p: (_step_of(p), osp.getmtime(p)), reverse=True)
    seen = {osp.abspath(p) for p in named}
    return named + [p for p in found if osp.abspath(p) not in seen]


class Checkpoint(NamedTuple):
    """A checkpoint chosen to resume from, and the shapes of its state-dict tensors."""

    path: str
    shapes: dict[str, torch.Size]


def readable_checkpoint(work_dir: str) -> Checkpoint | None:
    """The checkpoint of ``work_dir`` that ``--resume`` should continue from, with its tensors' shapes.

    Args:
        work_dir: a training run's work dir.

    Returns:
        The newest checkpoint that reads (``last_checkpoint``'s target if it does),
        or None if the work dir holds no checkpoint at all.

    Raises:
        ValueError: there are checkpoints but none of them can be read.
    """
    bad: list[str] = []
    for path in _candidates(work_dir):
        try:
            shapes = checkpoint_shapes(path)
        except ValueError as err:
            bad.append(f'{path} ({err})')
            print_log(f'--resume: skipping unreadable checkpoint {path}: {err}', logger='current', level=30)
            continue
        if bad:
            print_log(f'--resume: the latest checkpoint cannot be used; resuming from {path} instead', logger='current')
        return Checkpoint(path, shapes)
    if bad:
        raise ValueError(f'no readable checkpoint in {work_dir}: ' + '; '.join(bad))
    return None


def latest_readable_checkpoint(work_dir: str) -> str | None:
    """The path of :func:`readable_checkpoint`, or None."""
    chosen = readable_checkpoint(work_dir)
    return chosen.path if chosen else None


def _resume_checkpoint(work_dir: str, resume: str) -> Checkpoint | None:
    try:
        if resume == 'auto':
            return readable_checkpoint(work_dir)
        return Checkpoint(resume, checkpoint_shapes(resume))
    except ValueError as err:
        raise ConfigError(f'--resume: {err}') from err


def choose_resume_checkpoint(work_dir: str, resume: str) -> Checkpoint | None:
    """The checkpoint ``--resume`` continues from, decided by rank 0 and shared with every rank.

    On a shared file system each rank choosing for itself could pick a different file
    (one that appeared, or was found truncated, in between), and every rank would read
    every candidate. Here rank 0 reads the candidates' indexes once; the others get its
    choice (or its error) through :func:`~mmpvt.apis.distributed.on_rank_zero`.

    Args:
        work_dir: the run's work dir.
        resume: ``'auto'`` (the latest readable checkpoint of ``work_dir``) or a checkpoint path.

    Returns:
        The checkpoint, or None for ``'auto'`` in a work dir without checkpoints.

    Raises:
        ConfigError: the checkpoint (every checkpoint, for ``'auto'``) is missing or unreadable.
    """
    return on_rank_zero(_resume_checkpoint, work_dir, resume)


def _seed_from(*numbers: int) -> int:
    return int(np.random.SeedSequence([n % 2**32 for n in numbers]).generate_state(1)[0])


@HOOKS.register_module()
class ResumableRandomnessHook(Hook):
    """Reseed Python's, numpy's and torch's generators from (seed, epoch) and torch's from (seed, iteration).

    The data pipeline (with ``num_workers=0``) and the sampler's iterator draw
    after ``before_train_epoch``; the model's drop path after ``before_train_iter``.
    Seeding both from the run's counters, which a checkpoint restores, makes a
    resumed epoch-based run repeat the uninterrupted one bit for bit on a CPU.
    Runs without a seed are left alone.
    """

    priority = 'VERY_HIGH'

    def before_train_epoch(self, runner: Any) -> None:
        """Seed every global generator from the run's seed and the epoch about to start."""
        if runner.seed is None:
            return
        seed = _seed_from(runner.seed, runner.epoch, 0)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        """Seed torch's generator from the run's seed and the iteration about to run."""
        if runner.seed is not None:
            torch.manual_seed(_seed_from(runner.seed, runner.iter, 1))
