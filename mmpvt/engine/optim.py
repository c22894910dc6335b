"""Mixed precision on a machine without CUDA: ``optim_wrapper = dict(type='CpuAmpOptimWrapper', ...)``.

mmengine 0.10's ``AmpOptimWrapper`` asserts that a GPU (or NPU, MLU, MUSA) is
present. :class:`CpuAmpOptimWrapper` is that wrapper with torch's CPU
``GradScaler`` starting at scale 1 (bfloat16 needs no loss scaling): the forward
runs under ``torch.autocast('cpu', torch.bfloat16)``,
and a step whose gradients hold inf or NaN is skipped (the scale halves) and
reported, as the CUDA loss scaler does, instead of writing NaN into the weights.
``tools/train.py --amp`` picks fp16 ``AmpOptimWrapper`` with CUDA and this one on a CPU with a bf16
matrix unit (AMX); on other CPUs it stays in fp32, which is faster there
(:func:`mmpvt.models.cpu_features.choose_cpu_dtype`; ``--amp-dtype bfloat16`` forces this wrapper).

The CPU wrapper never meets a GPU: it refuses parameters on an accelerator, and
``tools/train.py`` refuses a config naming it (one dumped by a CPU ``--amp`` run)
on a machine with CUDA. Its loss-scaler state is saved under its own key
(:data:`LOSS_SCALER_KEY`), so mmengine's float16 wrapper never restores the bfloat16
scale of 1 from it, and it ignores, with a warning, the float16 scaler's ``loss_scaler``.
"""

from __future__ import annotations

from typing import Any

import torch
from mmengine.logging import print_log
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS

#: Where :class:`CpuAmpOptimWrapper` keeps its loss-scaler state in a state dict; mmengine's
#: ``AmpOptimWrapper`` uses ``'loss_scaler'``, and each ignores the other's.
LOSS_SCALER_KEY = 'cpu_amp_loss_scaler'


@OPTIM_WRAPPERS.register_module()
class CpuAmpOptimWrapper(AmpOptimWrapper):
    """bfloat16 mixed precision on the CPU; steps with non-finite gradients are skipped and logged.

    Args:
        loss_scale: ``'dynamic'``, a fixed scale, or ``GradScaler`` keyword arguments.
        **kwargs: arguments of ``OptimWrapper`` (``optimizer``, ``clip_grad``...).
    """

    def __init__(self, loss_scale: str | float | dict[str, Any] = 'dynamic', **kwargs: Any) -> None:
        OptimWrapper.__init__(self, **kwargs)  # AmpOptimWrapper.__init__ insists on an accelerator
        devices = sorted(
            {str(p.device) for group in self.optimizer.param_groups for p in group['params'] if p.device.type != 'cpu'}
        )
        if devices:
            raise ValueError(
                f'CpuAmpOptimWrapper (bfloat16 autocast with a CPU loss scaler) is for CPU training, but the model '
                f"has parameters on {', '.join(devices)}; on a GPU use optim_wrapper type='AmpOptimWrapper' "
                '(float16, what tools/train.py --amp picks there)'
            )
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

    def state_dict(self) -> dict[str, Any]:
        """The optimizer's state dict with the loss scaler's under :data:`LOSS_SCALER_KEY`."""
        state_dict = OptimWrapper.state_dict(self)
        state_dict[LOSS_SCALER_KEY] = self.loss_scaler.state_dict()
        return state_dict

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load the optimizer's and this wrapper's loss-scaler state; ignore another wrapper's scaler state.

        A ``'loss_scaler'`` entry comes from mmengine's float16 ``AmpOptimWrapper`` (or from a
        CpuAmpOptimWrapper saved before it had a key of its own): a float16 scale such as
        65536 would make the bfloat16 run's first steps overflow, so this wrapper keeps its own.
        """
        state_dict = dict(state_dict)
        foreign = state_dict.pop('loss_scaler', None)
        if foreign is not None:
            print_log(
                f"CpuAmpOptimWrapper: ignoring the checkpoint's loss-scaler state of another wrapper "
                f'(scale {foreign.get("scale")}; mmengine\'s float16 AmpOptimWrapper saves it as "loss_scaler"); '
                f"keeping this bfloat16 wrapper's scale {self.loss_scaler.get_scale():g}",
                logger='current',
                level=30,
            )
        own = state_dict.pop(LOSS_SCALER_KEY, None)
        if own is not None:
            self.loss_scaler.load_state_dict(own)
        OptimWrapper.load_state_dict(self, state_dict)
