"""Hooks a config names in ``custom_hooks``; each is registered in mmengine's ``HOOKS`` by its module."""

from .cpu_fast_paths import CpuFastPathsHook
from .early_checks import EarlyChecksHook, LabelValuesHook
from .logger import RankZeroLoggerHook
from .non_finite import NonFiniteError, NonFiniteGuardHook
from .preemption import STOPPED_BY_SIGNAL, StopOnSignalHook
from .rank_mean_loss import RankMeanLossHook
from .resumable_randomness import ResumableRandomnessHook

__all__ = [
    'STOPPED_BY_SIGNAL',
    'CpuFastPathsHook',
    'EarlyChecksHook',
    'LabelValuesHook',
    'NonFiniteError',
    'NonFiniteGuardHook',
    'RankMeanLossHook',
    'RankZeroLoggerHook',
    'ResumableRandomnessHook',
    'StopOnSignalHook',
]
