"""Training losses logged as the mean over all ranks: ``custom_hooks = [dict(type='RankMeanLossHook')]``."""

from __future__ import annotations

from typing import Any

import torch
from mmengine.dist import all_reduce_dict, is_distributed
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class RankMeanLossHook(Hook):
    """Log the training losses averaged over all ranks instead of rank 0's own.

    mmengine 0.10 logs each rank's local ``log_vars``; this hook all-reduces them
    (mean) right after each training step, before ``RuntimeInfoHook`` records them,
    so the log of an N-process run shows the loss of the whole batch.
    """

    priority = 'HIGHEST'

    def after_train_iter(
        self,
        runner: Any,
        batch_idx: int,
        data_batch: Any = None,
        outputs: dict[str, Any] | None = None,
    ) -> None:
        """Replace every tensor of ``outputs`` by its mean over ranks."""
        if not outputs or not is_distributed():
            return
        tensors = {k: v.detach().clone().float() for k, v in outputs.items() if isinstance(v, torch.Tensor)}
        all_reduce_dict(tensors, op='mean')
        outputs.update(tensors)
