"""What mmpvt adds to a training run, nameable from a config so mmdet's and mmseg's own tools get it too.

``import mmpvt.engine`` (which ``import mmpvt``, a config's ``custom_imports``, does) registers:

* ``default_hooks = dict(checkpoint=dict(backend_args=dict(backend='atomic_local')))``:
  whole-or-absent checkpoints (:class:`~.fileio.AtomicLocalBackend`).
* ``custom_hooks = [dict(type='EarlyChecksHook')]``: the checks of ``tools/train.py`` and
  ``tools/test.py`` that a hook can run before the first iteration (:mod:`.hooks.early_checks`).
* ``custom_hooks = [dict(type='ResumableRandomnessHook')]``: a resumed run draws the random
  numbers of an uninterrupted one (:mod:`.hooks.resumable_randomness`; opt-in, also under our tools).
* ``custom_hooks = [dict(type='RankMeanLossHook')]``: losses logged as the mean over ranks
  (:mod:`.hooks.rank_mean_loss`; our tools add it to distributed runs).
* ``custom_hooks = [dict(type='CpuFastPathsHook')]``: the CPU fast paths of
  :func:`mmpvt.optimize_for_cpu_inference` (:mod:`.hooks.cpu_fast_paths`; our tools add it).
* ``custom_hooks = [dict(type='StopOnSignalHook')]``: SIGTERM, SIGINT and SIGUSR1 finish the iteration, save
  a checkpoint to resume from and exit with status 75 (:mod:`.hooks.preemption`; our tools add it).
* ``custom_hooks = [dict(type='NonFiniteGuardHook')]``: float32 steps with a non-finite loss or gradient are
  skipped, and no checkpoint with a non-finite tensor is written (:mod:`.hooks.non_finite`; our tools add it).
* ``optim_wrapper = dict(type='CpuAmpOptimWrapper', ...)``: bfloat16 mixed precision on the CPU
  (:mod:`.optim`; mmdet's ``--amp`` picks ``AmpOptimWrapper``, which needs a GPU).
* ``model_wrapper_cfg = dict(type='CpuDistributedDataParallel')``: DDP on CPU processes
  (:mod:`.model_wrappers`; our tools pick it for a distributed run without CUDA).

Each class is registered by the module that defines it. Nothing here imports mmdet or mmseg.
"""

from .fileio import AtomicLocalBackend, write_atomically
from .hooks import (
    STOPPED_BY_SIGNAL,
    CpuFastPathsHook,
    EarlyChecksHook,
    LabelValuesHook,
    NonFiniteError,
    NonFiniteGuardHook,
    RankMeanLossHook,
    ResumableRandomnessHook,
    StopOnSignalHook,
)
from .model_wrappers import CpuDistributedDataParallel
from .optim import CpuAmpOptimWrapper

__all__ = [
    'STOPPED_BY_SIGNAL',
    'AtomicLocalBackend',
    'CpuAmpOptimWrapper',
    'CpuDistributedDataParallel',
    'CpuFastPathsHook',
    'EarlyChecksHook',
    'LabelValuesHook',
    'NonFiniteError',
    'NonFiniteGuardHook',
    'RankMeanLossHook',
    'ResumableRandomnessHook',
    'StopOnSignalHook',
    'write_atomically',
]
