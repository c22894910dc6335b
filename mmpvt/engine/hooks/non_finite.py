"""A diverging step never destroys a run's progress: ``custom_hooks = [dict(type='NonFiniteGuardHook')]``.

Our ``tools/train.py`` adds it; under mmdet's and mmseg's own tools a config names it. It

* makes the float32 optimizer wrapper skip a step whose gradients (or, in one process, loss) hold inf or
  NaN (:func:`~mmpvt.engine.optim.skip_non_finite_steps`; the mixed-precision wrappers skip them already),
  logs the iteration and the non-finite loss terms, and stops the run after ``max_consecutive_skips``
  skipped steps in a row, naming the last good checkpoint and the likely causes;
* checks the model's parameters and buffers (BatchNorm's running statistics go non-finite in the forward
  pass, whatever the step does) and the optimizer state before every checkpoint the ``CheckpointHook`` is
  about to write, on every rank, and stops the run instead: a checkpoint with a non-finite tensor is never
  written over a good one and never becomes ``last_checkpoint``. ``before_save_checkpoint`` refuses any other
  such checkpoint (a best one, the one a signal asks for) on the rank that writes it;
* refuses a checkpoint with a non-finite tensor when one is loaded (``load_from``, ``--resume`` of
  mmdet's and mmseg's tools; ours skips it when choosing, :mod:`mmpvt.launch.resume`).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from mmengine.dist import all_reduce, get_rank, is_distributed
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.optim import OptimWrapper, OptimWrapperDict
from mmengine.registry import HOOKS
from mmengine.runner import find_latest_checkpoint

from ...checkpoint import non_finite_tensors
from ..optim import SkipNonFiniteSteps, skip_non_finite_steps

#: What most often makes a PVT run diverge, for the message that stops it.
LIKELY_CAUSES = (
    'likely causes: a learning rate too high for this batch size (optim_wrapper.optimizer.lr, the warm-up, '
    'auto_scale_lr), data that gives a degenerate target (an empty or zero-size box, a label map of only ignored '
    'pixels), or float16 overflow under --amp on a GPU. Fix the cause, then continue from the last good '
    'checkpoint with --resume PATH'
)


class NonFiniteError(RuntimeError):
    """A run stopped because its loss, gradients or weights went non-finite; the message says what to do."""


def _named(names: list[str], limit: int = 5) -> str:
    shown = ', '.join(names[:limit])
    return shown + (f' (and {len(names) - limit} more)' if len(names) > limit else '')


def last_good_checkpoint(runner: Any) -> str:
    """Where the run can continue from: ``last_checkpoint``'s target (only finite checkpoints get there)."""
    path = find_latest_checkpoint(runner.work_dir)
    return path if path else f'none yet: {runner.work_dir} holds no checkpoint of this run'


def non_finite_state(state_dict: Any, optimizer: Any = None) -> list[str]:
    """The non-finite tensors of a model's state dict (by name) and an optimizer's state (``optimizer.…``)."""
    return non_finite_tensors(state_dict) + [f'optimizer.{name}' for name in non_finite_tensors(optimizer or {})]


def _wrappers(optim_wrapper: Any) -> list[OptimWrapper]:
    if isinstance(optim_wrapper, OptimWrapperDict):
        return list(optim_wrapper.values())
    return [optim_wrapper] if isinstance(optim_wrapper, OptimWrapper) else []


def _any_rank(flag: bool) -> bool:
    """Whether ``flag`` is set on any rank (one all-reduce in a distributed run)."""
    if not is_distributed():
        return flag
    value = torch.tensor([int(flag)])
    all_reduce(value, op='max')
    return bool(value.item())


@HOOKS.register_module()
class NonFiniteGuardHook(Hook):
    """Skip non-finite steps, stop a run that keeps producing them, never save a non-finite checkpoint.

    Args:
        max_consecutive_skips: skipped steps in a row after which the run stops with :class:`NonFiniteError`.
    """

    priority = 'LOW'  # after_train_iter/epoch before the CheckpointHook's (VERY_LOW)

    def __init__(self, max_consecutive_skips: int = 20) -> None:
        if max_consecutive_skips < 1:
            raise ValueError(f'max_consecutive_skips must be at least 1, got {max_consecutive_skips}')
        self.max_consecutive_skips = max_consecutive_skips
        self.consecutive_skips = 0
        self._counts: tuple[int, int] = (0, 0)

    def before_train(self, runner: Any) -> None:
        """Make the run's float32 optimizer wrapper(s) skip non-finite steps."""
        guarded = [skip_non_finite_steps(wrapper) for wrapper in _wrappers(runner.optim_wrapper)]
        self._counts = self._step_counts(runner)
        if any(guarded):
            print_log(
                f'NonFiniteGuardHook: steps with a non-finite loss or gradient are skipped; '
                f'{self.max_consecutive_skips} in a row stop the run',
                logger='current',
            )

    @staticmethod
    def _step_counts(runner: Any) -> tuple[int, int]:
        """(steps attempted, steps skipped) over the guarded wrappers."""
        guarded = [w for w in _wrappers(runner.optim_wrapper) if isinstance(w, SkipNonFiniteSteps)]
        return sum(w.steps for w in guarded), sum(w.skipped_steps for w in guarded)

    def after_train_iter(
        self,
        runner: Any,
        batch_idx: int,
        data_batch: Any = None,
        outputs: dict[str, Any] | None = None,
    ) -> None:
        """Report a skipped step and count it; check the state before the CheckpointHook saves this iteration."""
        steps, skipped = self._step_counts(runner)
        if steps > self._counts[0]:  # a step was attempted in this iteration (not a gradient-accumulation one)
            if skipped > self._counts[1]:
                self._skipped(runner, outputs or {}, skipped)
            else:
                self.consecutive_skips = 0
        self._counts = (steps, skipped)
        if self._checkpoint_due(runner, by_epoch=False):
            self._check_state(runner, f'iteration {runner.iter + 1}')

    def after_train_epoch(self, runner: Any) -> None:
        """Check the state before the CheckpointHook saves this epoch."""
        if self._checkpoint_due(runner, by_epoch=True):
            self._check_state(runner, f'epoch {runner.epoch + 1}')

    def _skipped(self, runner: Any, outputs: dict[str, Any], total: int) -> None:
        self.consecutive_skips += 1
        values = {key: float(v.detach()) if isinstance(v, torch.Tensor) else float(v) for key, v in outputs.items()}
        terms = {key: value for key, value in values.items() if not math.isfinite(value)}
        found = ', '.join(f'{key}={value}' for key, value in terms.items()) or 'none'
        norms = [w.last_grad_norm for w in _wrappers(runner.optim_wrapper) if isinstance(w, SkipNonFiniteSteps)]
        print_log(
            f'iteration {runner.iter + 1}: non-finite loss or gradient, step skipped (weights unchanged); '
            f'non-finite loss terms: {found}; gradient norm {", ".join(f"{n:g}" for n in norms)}; '
            f'{self.consecutive_skips} skipped in a row ({total} in all; the run stops at '
            f'{self.max_consecutive_skips} in a row)',
            logger='current',
            level=30,
        )
        if self.consecutive_skips >= self.max_consecutive_skips:
            lrs = sorted({group['lr'] for w in _wrappers(runner.optim_wrapper) for group in w.param_groups})
            raise NonFiniteError(
                f'{self.consecutive_skips} training steps in a row had a non-finite loss or gradient '
                f'(iterations {runner.iter + 2 - self.consecutive_skips} to {runner.iter + 1}; last non-finite loss '
                f'terms: {found}); stopping. The weights are those of the last finite step; the last good '
                f'checkpoint is {last_good_checkpoint(runner)}. The learning rate is now '
                f'{", ".join(f"{lr:g}" for lr in lrs)}; {LIKELY_CAUSES}'
            )

    @staticmethod
    def _checkpoint_due(runner: Any, by_epoch: bool) -> bool:
        """Whether a CheckpointHook of the run saves at the end of this iteration (or epoch), by its own rules."""
        for hook in runner.hooks:
            if not isinstance(hook, CheckpointHook) or hook.by_epoch != by_epoch:
                continue
            if by_epoch:
                due = hook.every_n_epochs(runner, hook.interval, hook.save_begin)
                last = hook.is_last_train_epoch(runner)
            else:
                due = hook.every_n_train_iters(runner, hook.interval, hook.save_begin)
                last = hook.is_last_train_iter(runner)
            if due or (hook.save_last and last):
                return True
        return False

    def _check_state(self, runner: Any, when: str) -> None:
        """Stop every rank with :class:`NonFiniteError` if the model or optimizer state of any rank is non-finite."""
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        found = non_finite_state(model.state_dict(), runner.optim_wrapper.state_dict())
        if not _any_rank(bool(found)):
            return
        where = _named(found) if found else f'tensors of another rank (rank {get_rank()} is finite)'
        raise NonFiniteError(
            f'the training state went non-finite by the end of {when}: {where} hold inf or NaN (the loss and '
            f'gradients can stay finite while BatchNorm statistics overflow); not saving the checkpoint due now, '
            f'so that it cannot replace a good one. The last good checkpoint is {last_good_checkpoint(runner)}; '
            f'{LIKELY_CAUSES}'
        )

    def before_save_checkpoint(self, runner: Any, checkpoint: dict[str, Any]) -> None:
        """Refuse to write any checkpoint holding a non-finite tensor (raised before a byte is written)."""
        found = non_finite_state(checkpoint['state_dict'], checkpoint.get('optimizer'))
        if found:
            raise NonFiniteError(
                f'refusing to save a checkpoint at iteration {checkpoint["meta"].get("iter")}: {_named(found)} hold '
                f'inf or NaN. The last good checkpoint is {last_good_checkpoint(runner)}; {LIKELY_CAUSES}'
            )

    def after_load_checkpoint(self, runner: Any, checkpoint: dict[str, Any]) -> None:
        """Refuse a loaded checkpoint holding a non-finite tensor: training from it would continue from garbage."""
        found = non_finite_state(checkpoint.get('state_dict', {}), checkpoint.get('optimizer'))
        if found:
            source = runner.cfg.get('load_from') or f'the latest checkpoint of {runner.work_dir}'
            raise NonFiniteError(
                f'{source}: {_named(found)} hold inf or NaN; training cannot continue from this checkpoint. '
                f'Resume from an earlier one with --resume PATH'
            )
