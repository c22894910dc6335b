"""Resume policy: which checkpoint ``--resume`` continues from, and never overwriting another run.

* :func:`readable_checkpoint` picks the checkpoint ``--resume`` continues from: the one
  mmengine's ``last_checkpoint`` names (:func:`mmengine.runner.find_latest_checkpoint`) if it
  reads and holds no inf or NaN, else the newest ``epoch_*.pth`` / ``iter_*.pth`` that does, with a
  warning naming each bad file. The chosen file is read once, memory-mapped
  (:func:`~mmpvt.launch.checkpoints.checkpoint_shapes`, :func:`~mmpvt.launch.checkpoints.checkpoint_non_finite`),
  and in a distributed run only rank 0 reads (:func:`choose_resume_checkpoint`).
* :func:`check_work_dir`: a new run never overwrites another's checkpoints unless asked to resume.

Whole checkpoints (the ``atomic_local`` backend) and reproducible resumes (``ResumableRandomnessHook``)
are in :mod:`mmpvt.engine`, which a config names.
"""

from __future__ import annotations

import glob
import os.path as osp
import re
from typing import Any, NamedTuple

import torch
from mmengine.logging import print_log
from mmengine.runner import find_latest_checkpoint

from . import ConfigError
from .checkpoints import checkpoint_non_finite, checkpoint_shapes
from .distributed import on_rank_zero

#: What ``CheckpointHook`` names its files (mmengine's default ``filename_tmpl``).
CHECKPOINT_NAME = re.compile(r'(epoch|iter)_(\d+)\.pth$')


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


def _step_of(path: str) -> int:
    match = CHECKPOINT_NAME.search(osp.basename(path))
    return int(match.group(2)) if match else -1


def _candidates(work_dir: str) -> list[str]:
    """``last_checkpoint``'s target first, then every epoch_*/iter_* file, newest (last written) first.

    By time, not by the number in the name: an epoch-based run stopped by a signal holds an ``iter_N.pth``
    among its ``epoch_N.pth``, and the two numbers do not compare.
    """
    named = [path for path in [find_latest_checkpoint(work_dir)] if path]
    found = [p for p in glob.glob(osp.join(work_dir, '*.pth')) if CHECKPOINT_NAME.search(osp.basename(p))]
    found.sort(key=lambda p: (osp.getmtime(p), _step_of(p)), reverse=True)
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
        The newest checkpoint that reads and holds only finite values (``last_checkpoint``'s target if
        it does), or None if the work dir holds no checkpoint at all.

    Raises:
        ValueError: there are checkpoints but none of them can be read.
    """
    bad: list[str] = []
    for path in _candidates(work_dir):
        try:
            shapes = checkpoint_shapes(path)
            problem = _non_finite(path)
        except ValueError as err:
            problem = f'unreadable checkpoint {path}: {err}'
        if problem:
            bad.append(problem)
            print_log(f'--resume: skipping {problem}', logger='current', level=30)
            continue
        if bad:
            print_log(f'--resume: the latest checkpoint cannot be used; resuming from {path} instead', logger='current')
        return Checkpoint(path, shapes)
    if bad:
        raise ValueError(f'no readable checkpoint in {work_dir}: ' + '; '.join(bad))
    return None


def _non_finite(path: str) -> str | None:
    """What is wrong with a checkpoint holding inf or NaN, or None."""
    found = checkpoint_non_finite(path)
    if not found:
        return None
    names = ', '.join(found[:3]) + (f' (and {len(found) - 3} more)' if len(found) > 3 else '')
    return f'checkpoint {path} with non-finite values: {names} hold inf or NaN'


def latest_readable_checkpoint(work_dir: str) -> str | None:
    """The path of :func:`readable_checkpoint`, or None."""
    chosen = readable_checkpoint(work_dir)
    return chosen.path if chosen else None


def _resume_checkpoint(work_dir: str, resume: str) -> Checkpoint | None:
    try:
        if resume == 'auto':
            return readable_checkpoint(work_dir)
        chosen = Checkpoint(resume, checkpoint_shapes(resume))
        problem = _non_finite(resume)
        if problem:
            raise ValueError(f'{problem}; training cannot continue from it. Give an earlier checkpoint')
        return chosen
    except ValueError as err:
        raise ConfigError(f'--resume: {err}') from err


def choose_resume_checkpoint(work_dir: str, resume: str) -> Checkpoint | None:
    """The checkpoint ``--resume`` continues from, decided by rank 0 and shared with every rank.

    On a shared file system each rank choosing for itself could pick a different file
    (one that appeared, or was found truncated, in between), and every rank would read
    every candidate. Here rank 0 reads the candidates' indexes once; the others get its
    choice (or its error) through :func:`~mmpvt.launch.distributed.on_rank_zero`.

    Args:
        work_dir: the run's work dir.
        resume: ``'auto'`` (the latest readable checkpoint of ``work_dir``) or a checkpoint path.

    Returns:
        The checkpoint, or None for ``'auto'`` in a work dir without checkpoints.

    Raises:
        ConfigError: the checkpoint (every checkpoint, for ``'auto'``) is missing or unreadable.
    """
    return on_rank_zero(_resume_checkpoint, work_dir, resume)


def resume_from(cfg: Any, resume: str | None) -> Checkpoint | None:
    """Pick the readable checkpoint ``--resume`` continues from, on rank 0 for every rank; set ``cfg`` to it.

    ``--resume`` (auto) continues from :func:`readable_checkpoint` (nothing to resume in a work
    dir without checkpoints); ``--resume PATH`` must name a readable checkpoint. Call it once the
    process group is up (inside :func:`~mmpvt.launch.distributed.distributed_run`).

    Returns:
        The checkpoint with its tensors' shapes, or None.

    Raises:
        ConfigError: the checkpoint is unreadable, or none of the work dir's is readable.
    """
    if resume is None:
        return None
    chosen = choose_resume_checkpoint(cfg.work_dir, resume)
    cfg.load_from = chosen.path if chosen else None
    cfg.resume = chosen is not None
    return chosen
