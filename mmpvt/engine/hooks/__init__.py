"""Hooks a config names in ``custom_hooks``; each is registered in mmengine's ``HOOKS`` by its module."""

from .cpu_fast_paths import CpuFastPathsHook
from .early_checks import EarlyChecksHook, LabelValuesHook
from .rank_mean_loss import RankMeanLossHook
from .resumable_randomness import ResumableRandomnessHook

__all__ = ['CpuFastPathsHook', 'EarlyChecksHook', 'LabelValuesHook', 'RankMeanLossHook', 'ResumableRandomnessHook']
