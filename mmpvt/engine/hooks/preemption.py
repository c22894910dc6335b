"""A preempted run loses at most one iteration: ``custom_hooks = [dict(type='StopOnSignalHook')]``.

Our ``tools/train.py`` adds it; under mmdet's and mmseg's own tools a config names it. From the start of
training to its end, SIGTERM (Slurm's preemption, ``scancel`` and time limit; what torchrun forwards),
SIGINT (Ctrl-C) and SIGUSR1 (``sbatch --signal=B:USR1@120``, forwarded by ``tools/slurm_batch.sh``) make
the run

1. finish the training (or validation) iteration in progress;
2. agree across ranks: every rank all-reduces one flag per iteration, so all stop after the same one
   even when the signal reached only one of them, and none waits in a collective for a rank that left;
3. save, on rank 0, a checkpoint with everything ``--resume`` needs (model, optimizer, schedulers, the
   message hub, the iteration and the position inside the epoch) through the ``atomic_local`` backend,
   and point ``last_checkpoint`` at it;
4. exit with status :data:`STOPPED_BY_SIGNAL` (75, "stopped by signal, resumable") on every rank.

Further signals while it stops are reported and otherwise ignored; SIGKILL still ends the process at
once, and then the atomic writer leaves the previous checkpoint whole. A run resumed from such a
checkpoint continues inside the epoch where it stopped (the batches before are loaded, so that the data
pipeline's random draws repeat the uninterrupted run's, but not trained on); mmengine's iteration-based
loop advances its data loader itself.
"""

from __future__ import annotations

import os
import os.path as osp
import signal
import sys
import threading
from types import FrameType
from typing import Any

import torch
from mmengine.dist import all_reduce, get_rank, get_world_size, is_distributed
from mmengine.hooks import CheckpointHook, Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS
from mmengine.runner import EpochBasedTrainLoop

from ...launch.distributed import on_rank_zero
from ..fileio import write_atomically

#: Exit status of a run that a signal stopped after it saved a checkpoint to resume from (sysexits.h's
#: EX_TEMPFAIL: a temporary failure, try again). ``tools/slurm_batch.sh`` requeues a job on it.
STOPPED_BY_SIGNAL = 75

#: The key of a stop checkpoint's ``meta`` that says where and why the run stopped.
STOP_META = 'stopped_by_signal'


class StoppedBySignal(SystemExit):
    """Raised on every rank once the checkpoint is saved: the process exits with :data:`STOPPED_BY_SIGNAL`."""

    def __init__(self) -> None:
        super().__init__(STOPPED_BY_SIGNAL)


def _signal_name(number: int) -> str:
    return signal.Signals(number).name


def _resume_inside_epoch(loop: EpochBasedTrainLoop, skip: int) -> None:
    """Make ``loop``'s next epoch start at batch ``skip``; later epochs run as usual.

    The skipped batches are loaded and dropped, as mmengine's iteration-based loop does on resume,
    so that they consume the random draws of the data pipeline (and the sampler's order) of the run
    that trained them. The rest mirrors mmengine 0.10's ``EpochBasedTrainLoop.run_epoch``.
    """

    def run_epoch() -> None:
        del loop.run_epoch  # the class's own method from the next epoch on
        runner = loop.runner
        runner.call_hook('before_train_epoch')
        runner.model.train()
        for idx, data_batch in enumerate(loop.dataloader):
            if idx >= skip:
                loop.run_iter(idx, data_batch)
        runner.call_hook('after_train_epoch')
        loop._epoch += 1

    loop.run_epoch = run_epoch  # type: ignore[method-assign]


@HOOKS.register_module()
class StopOnSignalHook(Hook):
    """On SIGTERM, SIGINT or SIGUSR1: finish the iteration, save a checkpoint on rank 0, exit 75 on every rank.

    Args:
        signals: the signals that stop the run (names or numbers).
    """

    priority = 'LOWEST'  # after every other hook of the iteration, the CheckpointHook's interval save included

    def __init__(self, signals: tuple[str | int, ...] = ('SIGTERM', 'SIGINT', 'SIGUSR1')) -> None:
        self.signals = tuple(signal.Signals(s) if isinstance(s, int) else signal.Signals[s] for s in signals)
        self.received = 0  # the first signal's number, 0 until one arrives
        self._previous: dict[signal.Signals, Any] = {}
        self._pid = os.getpid()
        self._active = False  # between before_train and after_train, on every rank alike
        self._resumed: dict[str, Any] | None = None

    # --- the handlers -------------------------------------------------------------------------

    def _handle(self, number: int, frame: FrameType | None) -> None:
        """Note the signal; the run acts on it at the next iteration boundary (nothing else is safe here)."""
        if os.getpid() != self._pid:
            return  # a forked data-loader worker: the main process decides
        name = _signal_name(number)
        if self.received:
            message = f'{name} received while stopping: ignored, the checkpoint is being saved (SIGKILL ends at once)'
        else:
            self.received = number
            message = f'{name} received: finishing the iteration in progress, then saving a checkpoint to resume from'
        os.write(sys.stderr.fileno(), f'[rank {get_rank()}] {message}\n'.encode())

    def _install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            message = 'StopOnSignalHook: not in the main thread, the signals keep their handlers'
            print_log(message, logger='current', level=30)
            return
        self._pid = os.getpid()
        for number in self.signals:
            self._previous[number] = signal.signal(number, self._handle)

    def _restore(self) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    # --- training -------------------------------------------------------------------------------

    def after_load_checkpoint(self, runner: Any, checkpoint: dict[str, Any]) -> None:
        """Remember where a stop checkpoint stopped, to continue there."""
        self._resumed = (checkpoint.get('meta') or {}).get(STOP_META)

    def before_train(self, runner: Any) -> None:
        """Install the handlers; a run resumed from a stop checkpoint continues inside its epoch."""
        self._install()
        self._active = True
        stop, self._resumed = self._resumed, None
        if not stop or stop.get('iter') != runner.iter:  # loaded by load_from, not resumed
            return
        loop, skip = runner.train_loop, stop.get('batches_in_epoch', 0)
        where = f'iteration {runner.iter}'
        if skip and isinstance(loop, EpochBasedTrainLoop):
            if type(loop).run_epoch is not EpochBasedTrainLoop.run_epoch:
                print_log(
                    f'{type(loop).__name__} has its own run_epoch: the resumed epoch {runner.epoch + 1} starts at its '
                    f'first batch, not after the {skip} batches trained before the stop',
                    logger='current',
                    level=30,
                )
            else:
                _resume_inside_epoch(loop, skip)
                where += f', epoch {runner.epoch + 1} at batch {skip + 1} of {len(loop.dataloader)}'
        print_log(f'continuing a run stopped by {stop["signal"]}: from {where}', logger='current')

    def after_train(self, runner: Any) -> None:
        """Give the signals their handlers back."""
        self._active = False
        self._restore()

    def after_train_iter(
        self,
        runner: Any,
        batch_idx: int,
        data_batch: Any = None,
        outputs: dict[str, Any] | None = None,
    ) -> None:
        """Stop here if any rank received a signal."""
        in_epoch = isinstance(runner.train_loop, EpochBasedTrainLoop)
        self._maybe_stop(runner, iteration=runner.iter + 1, batches_in_epoch=batch_idx + 1 if in_epoch else 0)

    def after_val_iter(
        self,
        runner: Any,
        batch_idx: int,
        data_batch: Any = None,
        outputs: Any = None,
    ) -> None:
        """Stop during a validation inside training too (its iterations are done; the validation is not)."""
        if self._active:
            self._maybe_stop(runner, iteration=runner.iter, batches_in_epoch=0)

    # --- stopping -------------------------------------------------------------------------------

    def _signals_by_rank(self) -> list[int]:
        """The signal each rank received (0: none), all-reduced so that every rank decides alike."""
        if not is_distributed():
            return [self.received]
        received = torch.zeros(get_world_size(), dtype=torch.int64)
        received[get_rank()] = self.received
        all_reduce(received, op='sum')
        return received.tolist()

    def _maybe_stop(self, runner: Any, iteration: int, batches_in_epoch: int) -> None:
        by_rank = self._signals_by_rank()
        if not any(by_rank):
            return
        first = next(number for number in by_rank if number)
        ranks = [rank for rank, number in enumerate(by_rank) if number]
        meta = {
            'epoch': runner.epoch,
            'iter': iteration,
            STOP_META: dict(signal=_signal_name(first), iter=iteration, batches_in_epoch=batches_in_epoch),
        }
        self._active = False
        try:
            path = on_rank_zero(self._save, runner, f'iter_{iteration}.pth', meta)
        finally:
            self._restore()
        where = f'iteration {iteration}'
        if batches_in_epoch:
            where += f' (epoch {runner.epoch + 1}, batch {batches_in_epoch} of {len(runner.train_loop.dataloader)})'
        got = ', '.join(f'{_signal_name(by_rank[r])} on rank {r}' for r in ranks) if is_distributed() else ''
        print_log(
            f'stopped by {_signal_name(first)}{f" ({got})" if got else ""} after {where}; checkpoint {path}; '
            f'exit status {STOPPED_BY_SIGNAL} (stopped by signal, resumable): continue with --resume',
            logger='current',
            level=30,
        )
        if get_rank() != 0:  # mmengine logs on rank 0 only
            print(f'[rank {get_rank()}] stopped by signal after {where}', file=sys.stderr, flush=True)
        raise StoppedBySignal

    @staticmethod
    def _save(runner: Any, filename: str, meta: dict[str, Any]) -> str:
        """Save the checkpoint where and how the run's CheckpointHook saves (atomically on a local disk)."""
        hooks = [hook for hook in runner.hooks if isinstance(hook, CheckpointHook)]
        out_dir = getattr(hooks[0], 'out_dir', None) if hooks else None
        out_dir = out_dir or runner.work_dir
        backend_args = hooks[0].backend_args if hooks else None
        if '://' not in str(out_dir) and not (backend_args or {}).get('backend', '').startswith('atomic'):
            backend_args = dict(backend='atomic_local')
        runner.save_checkpoint(out_dir, filename, meta=meta, by_epoch=False, backend_args=backend_args)
        path = osp.join(out_dir, filename)
        runner.message_hub.update_info('last_ckpt', path)
        write_atomically(path.encode(), osp.join(runner.work_dir, 'last_checkpoint'))
        return path
