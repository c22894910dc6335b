"""``--amp`` on a machine without CUDA: bfloat16 autocast on the CPU with mmengine's loss-scaler semantics.

mmengine 0.10's ``AmpOptimWrapper`` asserts that a GPU (or NPU, MLU, MUSA) is
present. :class:`CpuAmpOptimWrapper` is that wrapper with torch's CPU
``GradScaler`` starting at scale 1 (bfloat16 needs no loss scaling): the forward
runs under ``torch.autocast('cpu', torch.bfloat16)``,
and a step whose gradients hold inf or NaN is skipped (the scale halves) and
reported, as the CUDA loss scaler does, instead of writing NaN into the weights.
:func:`amp_optim_wrapper` picks fp16 ``AmpOptimWrapper`` with CUDA and this one without.
"""

from __future__ import annotations

from typing import Any

import torch
from mmengine.logging import print_log
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class CpuAmpOptimWrapper(AmpOptimWrapper):
    """bfloat16 mixed precision on the CPU; steps with non-finite gradients are skipped and logged.

    Args:
        loss_scale: ``'dynamic'``, a fixed scale, or ``GradScaler`` keyword arguments.
        **kwargs: arguments of ``OptimWrapper`` (``optimizer``, ``clip_grad``...).
    """

    def __init__(self, loss_scale: str | float | dict[str, Any] = 'dynamic', **kwargs: Any) -> None:
        OptimWrapper.__init__(self, **kwargs)  # AmpOptimWrapper.__init__ insists on an accelerator
        self._scale_update_param = None
        if loss_scale == 'dynamic':
            # bfloat16 has float32's exponent range: scaling the loss up (to 2**16 as for float16) protects
            # nothing and overflows the FPN's bfloat16 convolution gradients. Start at 1; the scaler still
            # finds non-finite gradients, skips their step and halves the scale.
            self.loss_scaler = torch.amp.GradScaler('cpu', init_scale=1.0)
        elif isinstance(loss_scale, float):
            self._scale_update_param = loss_scale
            self.loss_scaler = torch.amp.GradScaler('cpu', init_scale=loss_scale)
        elif isinstance(loss_scale, dict):
            self.loss_scaler = torch.amp.GradScaler('cpu', **loss_scale)
        else:
            raise TypeError(f'loss_scale must be "dynamic", a float or a dict, got {loss_scale!r}')
        self.cast_dtype = torch.bfloat16
        self.skipped_steps = 0

    def step(self, **kwargs: Any) -> None:
        """Step through the scaler; count and log a step it skipped for non-finite gradients."""
        scale = self.loss_scaler.get_scale()
        super().step(**kwargs)
        if self.loss_scaler.get_scale() < scale:
            self.skipped_steps += 1
            print_log(
                f'--amp: non-finite gradients (inf or NaN loss); step skipped, loss scale {scale:g} -> '
                f'{self.loss_scaler.get_scale():g} ({self.skipped_steps} skipped so far)',
                logger='current',
                level=30,
            )


def amp_optim_wrapper(optim_wrapper: dict[str, Any]) -> None:
    """Turn the config's ``optim_wrapper`` into a mixed-precision one, in place.

    CUDA: mmengine's ``AmpOptimWrapper`` (float16, dynamic loss scale).
    CPU: :class:`CpuAmpOptimWrapper` (bfloat16, dynamic loss scale).
    """
    optim_wrapper['type'] = 'AmpOptimWrapper' if torch.cuda.is_available() else 'CpuAmpOptimWrapper'
    optim_wrapper['loss_scale'] = 'dynamic'
