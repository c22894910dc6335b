"""mmpvt's checks as hooks: ``custom_hooks = [dict(type='EarlyChecksHook')]`` under any tool.

The checks themselves live in :mod:`mmpvt.launch`, which ``tools/train.py`` and ``tools/test.py``
run before the Runner exists; these hooks run the ones a hook can reach, so that mmdet's and
mmseg's own tools stop a mistake before the first iteration too.
"""

from __future__ import annotations

from typing import Any

from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from mmengine.runner import BaseLoop

from ...launch.checkpoints import check_checkpoint_fits, check_load_from
from ...launch.class_checks import check_num_classes
from ...launch.config_checks import check_neck_channels
from ...launch.data_checks import check_image_files, check_train_data
from ...launch.label_checks import check_seg_labels


@HOOKS.register_module()
class LabelValuesHook(Hook):
    """:func:`~mmpvt.launch.label_checks.check_seg_labels` on every training, validation and test batch.

    A label-map value that is neither a class nor the ignore index stops the run at the batch that
    holds it (decoding every label map up front would cost minutes on ADE20K). Detector batches,
    which hold no label maps, pass untouched.
    """

    priority = 'VERY_HIGH'

    def _before_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, mode: str = 'train') -> None:
        """Check the batch's label-map values (mmengine calls this before every train, val and test batch)."""
        check_seg_labels(runner.model, data_batch)


@HOOKS.register_module()
class EarlyChecksHook(LabelValuesHook):
    """Run mmpvt's checks under any tool, so a mistake fails before the first iteration.

    * every run: the neck's (or decode head's) ``in_channels`` against the PVT's outputs, the heads'
      ``num_classes`` against the data's classes;
    * training: the COCO annotation files hold what mmdet reads and the config's class names, the training set is not
      empty, every image and label map it and the validation set name exists and every
      label map has its image's size; a checkpoint resumed by path, or a new run's ``load_from``, fits the
      model (``load_from`` may differ in the classifiers' number of classes: fine-tuning);
    * every batch of a segmentor: its label maps hold only classes and the ignore index;
    * testing: the checkpoint under test fits the model, checked before mmengine loads it (else mmengine
      loads it leniently and reports the metrics of a mostly random model).

    The checks that need the tools' command line (``--cfg-options`` typos, a work dir
    holding another run's checkpoints) or must run before the Runner builds the datasets
    (missing data folders, with the toy-data command) stay in ``tools/``; so does naming the
    file of an annotation file that is not JSON: the Runner parses it before any hook runs.
    """

    def before_run(self, runner: Any) -> None:
        """Check the neck's input channels against the backbone's outputs, and the checkpoint ``load_from`` names.

        mmengine loads ``load_from`` (leniently) right after ``before_run``: a training run's may differ in the
        classifiers' number of classes (fine-tuning), a test's or validation's must fit.
        """
        check_neck_channels(runner.cfg)
        # Runner.train() builds its loop before calling before_run; test() and val() leave the config there.
        training = isinstance(getattr(runner, '_train_loop', None), BaseLoop)
        check_num_classes(runner.cfg, ['train_dataloader'] if training else ['test_dataloader', 'val_dataloader'])
        if training:
            check_load_from(runner.model, runner.cfg)
        elif isinstance(runner.cfg.get('load_from'), str) and '://' not in runner.cfg.load_from:
            check_checkpoint_fits(runner.model, runner.cfg.load_from)

    def before_train(self, runner: Any) -> None:
        """Check the training data and a checkpoint resumed by path."""
        check_train_data(runner)
        check_image_files(runner)
        if runner.cfg.get('resume') and runner.cfg.get('load_from'):
            check_checkpoint_fits(runner.model, runner.cfg.load_from)
