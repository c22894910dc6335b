"""mmengine's ``LoggerHook`` with the test metrics' JSON written by rank 0 alone: ``default_hooks.logger``.

mmengine 0.10.7's ``LoggerHook.after_test_epoch`` dumps the test metrics to ``WORK_DIR/TIMESTAMP/TIMESTAMP.json``
on every rank, into the one file all ranks share (the timestamp is broadcast). The ranks' lines differ in their
timings, so they differ in length, and two ranks truncating and writing the same file at once can leave rank 0's
line followed by the tail of a longer one: a JSON file that does not parse (seen in a 2-process ``dist_test.sh``).
Training logs are not affected: the visualizer that writes them is rank 0's only (``master_only``).

Our tools put this hook in place of the stock ``LoggerHook`` in distributed runs
(:func:`mmpvt.launch.main.build_runner`); under mmdet's and mmseg's own tools a config names it:
``default_hooks = dict(logger=dict(type='RankZeroLoggerHook', interval=50))``.
"""

from __future__ import annotations

from typing import Any

from mmengine.dist import is_main_process
from mmengine.hooks import LoggerHook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class RankZeroLoggerHook(LoggerHook):
    """``LoggerHook`` whose test-metrics JSON only rank 0 writes; every rank still logs the metrics line."""

    def after_test_epoch(self, runner: Any, metrics: dict[str, float] | None = None) -> None:
        """Log the test metrics; write them to the run's JSON file on rank 0 only."""
        if is_main_process():
            super().after_test_epoch(runner, metrics)
            return
        _, log_str = runner.log_processor.get_log_after_epoch(
            runner, len(runner.test_dataloader), 'test', with_non_scalar=True
        )
        runner.logger.info(log_str)
