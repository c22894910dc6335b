"""The CPU fast paths under any tool: ``custom_hooks = [dict(type='CpuFastPathsHook')]``."""

from __future__ import annotations

from typing import Any

from mmengine.hooks import Hook
from mmengine.registry import HOOKS

from ...models.cpu_inference import optimize_for_cpu_inference


@HOOKS.register_module()
class CpuFastPathsHook(Hook):
    """Apply :func:`~mmpvt.optimize_for_cpu_inference` to the Runner's model before the run starts.

    Our ``tools/train.py`` and ``tools/test.py`` add it themselves; mmdet's and mmseg's own tools get it
    from a config. It changes no parameter or state-dict key, so checkpoints load and save as before, and
    every shortcut stands aside where it does not apply (autocast, tracing; the inference-only kernels
    in training), so it is safe in every mode. A model on a GPU is left as it is: no shortcut applies there.
    """

    priority = 'VERY_HIGH'

    def before_run(self, runner: Any) -> None:
        """Swap the fast paths into every PVT layer of ``runner.model`` (wrapped or not) if it runs on the CPU."""
        if all(param.device.type == 'cpu' for param in runner.model.parameters()):
            optimize_for_cpu_inference(runner.model)
