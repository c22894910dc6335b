"""The CPU fast paths under any tool: ``custom_hooks = [dict(type='CpuFastPathsHook')]``."""

from __future__ import annotations

from typing import Any

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from ...models.cpu_features import choose_cpu_dtype
from ...models.cpu_inference import optimize_for_cpu_inference, refresh_cast_weights


@HOOKS.register_module()
class CpuFastPathsHook(Hook):
    """Apply :func:`~mmpvt.optimize_for_cpu_inference` to the Runner's model before the run starts.

    Our ``tools/train.py`` and ``tools/test.py`` add it themselves; mmdet's and mmseg's own tools get it
    from a config. It changes no parameter or state-dict key, so checkpoints load and save as before, and
    every shortcut stands aside where it does not apply (autocast, tracing; the inference-only kernels
    in training), so it is safe in every mode. A model on a GPU is left as it is: no shortcut applies there.

    Args:
        dtype: the precision of the PVT's CPU inference (validation and testing): ``'float32'``
            (the default: outputs as the plain model's), ``'bfloat16'``, or ``'auto'``: bf16 where
            the CPU has a bf16 matrix unit (AMX), fp32 elsewhere. The choice and its reason are
            logged. Training is unaffected (``--amp`` chooses its precision).
    """

    priority = 'VERY_HIGH'

    def __init__(self, dtype: str = 'float32') -> None:
        choose_cpu_dtype(dtype, flags=())  # refuse an unknown name when the config is built
        self.dtype = dtype

    def before_run(self, runner: Any) -> None:
        """Swap the fast paths into every PVT layer of ``runner.model`` (wrapped or not) if it runs on the CPU."""
        if all(param.device.type == 'cpu' for param in runner.model.parameters()):
            choice = choose_cpu_dtype(self.dtype)
            optimize_for_cpu_inference(runner.model, choice)
            if self.dtype != 'float32':
                print_log(f'CPU inference of the PVT backbone runs in {choice}', logger='current')

    def before_val_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        """Drop the bf16 weight copies before a validation: EMAHook swaps weights through ``.data``."""
        if batch_idx == 0:
            refresh_cast_weights(runner.model)

    def before_test_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        """As :meth:`before_val_iter`, for testing."""
        if batch_idx == 0:
            refresh_cast_weights(runner.model)
