"""Optimizer wrappers: mixed precision on a machine without CUDA, and float32 steps that skip non-finite values.

``optim_wrapper = dict(type='CpuAmpOptimWrapper', ...)``:

mmengine 0.10's ``AmpOptimWrapper`` asserts that a GPU (or NPU, MLU, MUSA) is
present. :class:`CpuAmpOptimWrapper` is that wrapper with torch's CPU
``GradScaler`` starting at scale 1 (bfloat16 needs no loss scaling): the forward
runs under ``torch.autocast('cpu', torch.bfloat16)``,
and a step whose gradients hold inf or NaN is skipped (the scale halves) and
reported, as the CUDA loss scaler does, instead of writing NaN into the weights.
``tools/train.py --amp`` picks fp16 ``AmpOptimWrapper`` with CUDA and this one on a CPU with a bf16
matrix unit (AMX); on other CPUs it stays in fp32, which is faster there
(:func:`mmpvt.models.cpu_features.choose_cpu_dtype`; ``--amp-dtype bfloat16`` forces this wrapper).
Inside its autocast region a detector's box post-processing (mmcv's CPU NMS) and RoI extractors
(RoIAlign) run in fp32 (:mod:`mmpvt.engine.fp32_islands`), so two-stage detectors train as well.

The CPU wrapper never meets a GPU: it refuses parameters on an accelerator, and
``tools/train.py`` refuses a config naming it (one dumped by a CPU ``--amp`` run)
on a machine with CUDA. Its loss-scaler state is saved under its own key
(:data:`LOSS_SCALER_KEY`), so mmengine's float16 wrapper never restores the bfloat16
scale of 1 from it, and it ignores, with a warning, the float16 scaler's ``loss_scaler``.

:func:`skip_non_finite_steps` gives a float32 wrapper the same protection (:class:`SkipNonFiniteSteps`):
``NonFiniteGuardHook`` applies it, so a config only names the hook.
"""

from __future__ import annotations

import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from mmengine.dist import is_distributed
from mmengine.logging import print_log
from mmengine.optim import AmpOptimWrapper, OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS
from torch import nn

from .fp32_islands import fp32_islands

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
        self._prepared: weakref.WeakSet[nn.Module] = weakref.WeakSet()

    @contextmanager
    def optim_context(self, model: nn.Module) -> Iterator[None]:
        """mmengine's context (bf16 autocast; no gradient sync while accumulating), the model prepared first.

        The first time it meets a model, the parts of a detector that need fp32 (the RPN's box
        post-processing with mmcv's NMS, the RoI extractors with mmcv's RoIAlign) are made to run in
        fp32 inside the autocast region (:func:`~mmpvt.engine.fp32_islands.fp32_islands`), and logged.
        """
        if model not in self._prepared:
            self._prepared.add(model)
            heads, rois = fp32_islands(model)
            if rois:  # a two-stage detector: its proposals go through NMS, its RoIs through RoIAlign
                print_log(
                    f'--amp on the CPU: box post-processing (predict_by_feat: decoding, NMS) of {", ".join(heads)} '
                    f'and RoI extraction of {", ".join(rois)} in fp32 inside the bf16 autocast region '
                    "(mmcv's CPU nms and roi_align take fp32 only; box coordinates need fp32)",
                    logger='current',
                )
        with super().optim_context(model):
            yield

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


class SkipNonFiniteSteps:
    """An ``OptimWrapper`` that skips every step whose gradients (or, in one process, loss) hold inf or NaN.

    :class:`~mmpvt.engine.hooks.non_finite.NonFiniteGuardHook` mixes it into the run's float32 wrapper
    (:func:`skip_non_finite_steps`); the mixed-precision wrappers skip such steps through their loss scaler
    already. The decision is taken in ``update_params`` (what the models' ``train_step`` calls), between the
    backward pass and ``step``: mmengine's parameter schedulers wrap the instance's ``step`` to count calls,
    and a skipped step is not called at all. What it costs on a normal step: one ``isfinite`` of the loss and
    the gradients' norm (with ``clip_grad=dict(type='norm')``, the norm that clipping then uses instead of
    computing it again), and the float of the result, one synchronisation.

    In a distributed run the decision rests on the gradients alone: after DDP's all-reduce they are the same on
    every rank, so every rank skips the same steps and the weights stay equal. A non-finite loss makes its
    gradients non-finite too (the usual case), and then its step is skipped on every rank.

    Attributes:
        steps: steps due (one per ``should_update()``).
        skipped_steps: those skipped for non-finite values.
        last_grad_norm: the gradients' norm at the last step due (L2, or the norm type clipping by norm uses).
    """

    steps: int = 0
    skipped_steps: int = 0
    last_grad_norm: float = 0.0
    _finite_loss: torch.Tensor | None = None
    _clip_norm: torch.Tensor | None = None

    def update_params(
        self,
        loss: torch.Tensor,
        step_kwargs: dict[str, Any] | None = None,
        zero_kwargs: dict[str, Any] | None = None,
    ) -> None:
        """``OptimWrapper.update_params`` (backward, step, zero_grad) without the step when it is non-finite."""
        finite = torch.isfinite(loss.detach()).all()
        self._finite_loss = finite if self._finite_loss is None else self._finite_loss & finite
        self.backward(self.scale_loss(loss))
        if not self.should_update():
            return
        if self._finite_step():
            self.step(**(step_kwargs or {}))
        self._clip_norm = None
        self.zero_grad(**(zero_kwargs or {}))

    def _finite_step(self) -> bool:
        """Whether the step due may be taken; counts it, and counts it skipped if not."""
        finite_loss, self._finite_loss = self._finite_loss, None
        self.steps += 1
        magnitude = self._grad_magnitude()
        finite = torch.isfinite(magnitude)
        if finite_loss is not None and not is_distributed():
            finite = finite & finite_loss
        self.last_grad_norm = float(magnitude)
        if not bool(finite):
            self.skipped_steps += 1
        return bool(finite)

    def _grad_params(self) -> list[torch.Tensor]:
        groups = self.optimizer.param_groups
        return [p for group in groups for p in group['params'] if p.requires_grad and p.grad is not None]

    def _grad_magnitude(self) -> torch.Tensor:
        """The gradients' norm (of the norm type clipping by norm uses, which keeps it; else L2).

        A norm, not a search for inf and NaN: any of them makes it non-finite, and on the CPU it is one
        vectorised pass (about 11 ms for PVT-T RetinaNet's 23 M gradients on 2 threads, where ``isfinite``
        or the largest magnitude take 0.5 s). Gradients so large that their squares overflow (a norm above
        about 1.8e19) count as non-finite too.
        """
        grads = [p.grad for p in self._grad_params()]
        if not grads:
            return torch.zeros(())
        clip_by_norm = bool(self.clip_grad_kwargs) and self.grad_name == 'grad_norm'
        norm_type = self.clip_grad_kwargs.get('norm_type', 2.0) if clip_by_norm else 2.0
        foreach = self.clip_grad_kwargs.get('foreach') if clip_by_norm else None
        norm = torch.nn.utils.get_total_norm(grads, norm_type, foreach=foreach)
        if clip_by_norm:
            self._clip_norm = norm
        return norm

    def _clip_grad(self) -> None:
        """Clip by norm with the norm computed for the check (``clip_grad_norm_`` computes it the same way)."""
        if self._clip_norm is None:
            super()._clip_grad()  # type: ignore[misc]
            return
        max_norm, foreach = self.clip_grad_kwargs['max_norm'], self.clip_grad_kwargs.get('foreach')
        torch.nn.utils.clip_grads_with_norm_(self._grad_params(), max_norm, self._clip_norm, foreach=foreach)
        self.message_hub.update_scalar('train/grad_norm', float(self._clip_norm))


_GUARDED: dict[type, type] = {}


def skip_non_finite_steps(wrapper: OptimWrapper) -> bool:
    """Make ``wrapper`` skip non-finite steps (:class:`SkipNonFiniteSteps`), in place; True if it now does.

    Its class becomes a subclass of its own with the mixin in front, so its state and every other method stay.
    Left alone: a wrapper that already skips them (``AmpOptimWrapper`` and ``CpuAmpOptimWrapper``, through their
    loss scaler; one guarded before).
    """
    cls = type(wrapper)
    if isinstance(wrapper, (AmpOptimWrapper, SkipNonFiniteSteps)):
        return isinstance(wrapper, SkipNonFiniteSteps)
    if cls not in _GUARDED:
        _GUARDED[cls] = type(f'NonFiniteSkipping{cls.__name__}', (SkipNonFiniteSteps, cls), {})
    wrapper.__class__ = _GUARDED[cls]
    return True
