"""What mmpvt's tools add to a training run, nameable from a config so mmdet's and mmseg's own tools get it too.

``import mmpvt`` (a config's ``custom_imports``) imports this module, which makes these names
resolve in any config run by any OpenMMLab tool:

* ``default_hooks = dict(checkpoint=dict(backend_args=dict(backend='atomic_local')))``:
  whole-or-absent checkpoints (:class:`~mmpvt.apis.resume.AtomicLocalBackend`).
* ``custom_hooks = [dict(type='EarlyChecksHook')]``: :class:`EarlyChecksHook`, the checks of
  ``tools/train.py`` and ``tools/test.py`` that a hook can run before the first iteration.
* ``custom_hooks = [dict(type='ResumableRandomnessHook')]``: resumed runs draw the random
  numbers of an uninterrupted one (:class:`~mmpvt.apis.resume.ResumableRandomnessHook`).
* ``custom_hooks = [dict(type='RankMeanLossHook')]``: losses logged as the mean over ranks
  (:class:`~mmpvt.apis.distributed.RankMeanLossHook`).
* ``optim_wrapper = dict(type='CpuAmpOptimWrapper', ...)``: bfloat16 mixed precision on the CPU
  (:class:`~mmpvt.apis.amp.CpuAmpOptimWrapper`; mmdet's ``--amp`` picks ``AmpOptimWrapper``,
  which needs a GPU).

The classes live in :mod:`mmpvt.apis`, which registers all but ``RankMeanLossHook`` and
``EarlyChecksHook``; those two are registered here.
"""

from __future__ import annotations

from typing import Any

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from .apis.amp import CpuAmpOptimWrapper
from .apis.checks import (
    check_checkpoint_fits,
    check_image_files,
    check_neck_channels,
    check_seg_labels,
    check_train_data,
)
from .apis.distributed import RankMeanLossHook
from .apis.resume import AtomicLocalBackend, ResumableRandomnessHook

__all__ = ['AtomicLocalBackend', 'CpuAmpOptimWrapper', 'EarlyChecksHook', 'RankMeanLossHook', 'ResumableRandomnessHook']


class EarlyChecksHook(Hook):
    """Run mmpvt's checks under any tool, so a mistake fails before the first iteration.

    * every run: the neck's (or decode head's) ``in_channels`` against the PVT's outputs;
    * training: the COCO annotation files hold what mmdet reads, the training set is not
      empty, every image and label map it and the validation set name exists and every
      label map has its image's size; a checkpoint resumed by path fits the model;
    * every batch of a segmentor: its label maps hold only classes and the ignore index;
    * testing: the checkpoint under test fits the model (else mmengine loads it leniently
      and reports the metrics of a mostly random model).

    The checks that need the tools' command line (``--cfg-options`` typos, a work dir
    holding another run's checkpoints) or must run before the Runner builds the datasets
    (missing data folders, with the toy-data command) stay in ``tools/``; so does naming the
    file of an annotation file that is not JSON: the Runner parses it before any hook runs.
    """

    priority = 'VERY_HIGH'

    def before_run(self, runner: Any) -> None:
        """Check the neck's input channels against the backbone's outputs."""
        check_neck_channels(runner.cfg)

    def before_train(self, runner: Any) -> None:
        """Check the training data and a checkpoint resumed by path."""
        check_train_data(runner)
        check_image_files(runner)
        if runner.cfg.get('resume') and runner.cfg.get('load_from'):
            check_checkpoint_fits(runner.model, runner.cfg.load_from)

    def before_test(self, runner: Any) -> None:
        """Check that the checkpoint under test is one of this model."""
        if runner.cfg.get('load_from'):
            check_checkpoint_fits(runner.model, runner.cfg.load_from)

    def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        """Check the batch's label-map values (segmentors)."""
        check_seg_labels(runner.model, data_batch)

    def before_val_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        """Check the batch's label-map values (segmentors)."""
        check_seg_labels(runner.model, data_batch)

    def before_test_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        """Check the batch's label-map values (segmentors)."""
        check_seg_labels(runner.model, data_batch)


def register_hook(cls: type) -> None:
    """Register ``cls`` in mmengine's ``HOOKS`` (which mmdet's and mmseg's inherit) unless it is there already."""
    if HOOKS.get(cls.__name__) is not cls:
        HOOKS.register_module(module=cls)


register_hook(EarlyChecksHook)
register_hook(RankMeanLossHook)
