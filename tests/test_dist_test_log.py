"""A distributed test run's metrics JSON is written by rank 0 alone (``RankZeroLoggerHook``).

mmengine's stock ``LoggerHook`` writes it on every rank into one shared file, which two ranks writing at once
can leave unparseable. Here each rank of a real two-process gloo group runs a real Runner's ``test()`` into a
work dir of its own, so what each rank writes is seen apart: with the stock hook rank 1 writes the file too,
with ours only rank 0 does, and rank 0's log still has the metrics line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
from mmengine.config import Config
from mmengine.evaluator import BaseMetric
from mmengine.hooks import LoggerHook
from mmengine.model import BaseModel
from mmengine.runner import Runner

import mmpvt  # noqa: F401  (registers RankZeroLoggerHook)
from mmpvt.launch.main import rank_zero_test_json


class _Doubler(BaseModel):
    """Predicts twice its input; one parameter so the Runner has something to hold."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(2.0))

    def forward(self, inputs: torch.Tensor, data_samples: Any = None, mode: str = 'tensor') -> Any:
        return [{'pred': float(self.scale * x), 'target': 2 * float(x)} for x in inputs]


class _Error(BaseMetric):
    """Mean absolute error of the predictions, gathered over ranks by mmengine."""

    def process(self, data_batch: Any, data_samples: list[dict]) -> None:
        self.results.extend(abs(s['pred'] - s['target']) for s in data_samples)

    def compute_metrics(self, results: list[float]) -> dict[str, float]:
        return {'mae': sum(results) / len(results), 'count': float(len(results))}


def _test_run(rank: int, init_file: str, root: str, logger: str, results: Any) -> None:
    torch_dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=2)
    try:
        work_dir = Path(root) / f'rank{rank}'
        runner = Runner(
            model=_Doubler(),
            work_dir=str(work_dir),
            test_dataloader=dict(
                dataset=[{'inputs': torch.tensor(float(i))} for i in range(8)],
                sampler=dict(type='DefaultSampler', shuffle=False),
                batch_size=2,
                collate_fn=dict(type='default_collate'),
            ),
            test_cfg=dict(),
            test_evaluator=[_Error()],
            default_hooks=dict(logger=dict(type=logger)),
            experiment_name=f'rank{rank}',
        )
        metrics = runner.test()
        written = [json.loads(line) for log in work_dir.glob('*/*.json') for line in log.read_text().splitlines()]
        logs = [log.read_text() for log in work_dir.glob('*/*.log')]  # rank 0's: mmengine gives rank 1 no file
        logged = [line for log in logs for line in log.splitlines() if 'Epoch(test)' in line and 'mae: 0.0' in line]
        results.put((rank, metrics, written, logged))
    finally:
        torch_dist.destroy_process_group()


def _ranks_write(tmp_path: Path, logger: str) -> list[tuple]:
    context = mp.get_context('spawn')
    results = context.Queue()
    args = (str(tmp_path / 'init'), str(tmp_path), logger, results)
    mp.start_processes(_test_run, args=args, nprocs=2, join=True, start_method='spawn')
    return sorted(results.get(timeout=60) for _ in range(2))


@pytest.mark.parametrize('logger', ['LoggerHook', 'RankZeroLoggerHook'])
def test_only_rank_zero_writes_the_test_metrics(tmp_path: Path, logger: str) -> None:
    (zero, metrics0, written0, logged0), (one, metrics1, written1, _) = _ranks_write(tmp_path, logger)
    assert (zero, one) == (0, 1)
    assert len(logged0) == 1  # the metrics line of the run's log, as with the stock hook
    assert metrics0 == metrics1 == {'mae': 0.0, 'count': 8.0}  # both ranks' samples, gathered
    assert [{k: r[k] for k in ('mae', 'count')} for r in written0] == [metrics0]
    if logger == 'LoggerHook':
        assert len(written1) == 1  # the stock hook: rank 1 writes its own line into the shared file
    else:
        assert written1 == []


class _OwnLoggerHook(LoggerHook):
    """A user's own logger hook: left as the config names it."""


@pytest.mark.parametrize(
    ('logger', 'expected'),
    [
        (dict(type='LoggerHook', interval=5), dict(type='RankZeroLoggerHook', interval=5)),
        (dict(type=LoggerHook, interval=5), dict(type='RankZeroLoggerHook', interval=5)),
        (dict(type='RankZeroLoggerHook'), dict(type='RankZeroLoggerHook')),
        (dict(type=_OwnLoggerHook), dict(type=_OwnLoggerHook)),
        (None, None),
    ],
)
def test_the_tools_swap_only_the_stock_logger_hook(logger: dict | None, expected: dict | None) -> None:
    cfg = Config(dict(default_hooks=dict(logger=logger)))
    rank_zero_test_json(cfg)
    assert (cfg.default_hooks.logger.to_dict() if logger else cfg.default_hooks.logger) == expected
