"""Resumed runs that draw the random numbers of an uninterrupted one: ``dict(type='ResumableRandomnessHook')``.

Opt-in: name it in ``custom_hooks``. It reseeds the global generators at every epoch and
iteration, which a run that wants mmengine's own single seeding at start-up does not want.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


def _seed_from(*numbers: int) -> int:
    """A 32-bit seed mixed from ``numbers`` (numpy's SeedSequence: nearby inputs give unrelated seeds)."""
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
