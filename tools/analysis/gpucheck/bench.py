"""The backbone benchmark against mmdet on the GPU (``tools/analysis/benchmark.py``), trimmed to fit the lease:
PVT-S in fp32 (inference, training step, peak memory, the GEMM rate) and fp16 autocast (inference, training
step), PVTv2-b2 in fp32 and bf16 autocast (inference, training step). Each run first checks that
both backbones give the same outputs; a disagreement fails it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .build import tail
from .report import Check


@dataclass(frozen=True)
class BenchRun:
    name: str
    arch: str
    amp: str | None
    tasks: tuple[str, ...]


BENCH_RUNS = (
    BenchRun('PVT-S fp32', 'small', None, ('infer', 'train', 'memory', 'gemm')),
    BenchRun('PVT-S fp16 autocast', 'small', 'fp16', ('infer', 'train')),
    BenchRun('PVTv2-b2 fp32', 'b2', None, ('infer', 'train')),
    BenchRun('PVTv2-b2 bf16 autocast', 'b2', 'bf16', ('infer', 'train')),
)


def bench_command(run: BenchRun, device: str, sizes: dict[str, Any], result: Path, python: str) -> list[str]:
    cmd = [python, 'tools/analysis/benchmark.py', '--device', device, '--arch', run.arch]
    cmd += ['--tasks', ','.join(run.tasks), '--infer-size', *map(str, sizes['infer']), '--json', str(result)]
    cmd += ['--train-size', *map(str, sizes['train'][1:]), '--train-batch', str(sizes['train'][0])]
    cmd += ['--memory-size', *map(str, sizes['memory'][1:]), '--memory-batch', str(sizes['memory'][0])]
    cmd += ['--warmup', str(sizes['warmup']), '--repeats', str(sizes['repeats']), '--threads', '4']
    return cmd + (['--amp', run.amp] if run.amp else [])


def bench_figures(results: dict[str, Any]) -> list[str]:
    """One short figure per measurement: mmdet → mmpvt time (or memory) and the ratio."""
    figures = []
    for key, r in results.items():
        if key.startswith(('infer', 'train', 'retinanet')):
            figures.append(f'{key} {r["mmdet"] * 1e3:.1f} → {r["mmpvt"] * 1e3:.1f} ms ({r["speedup"]:.2f}×)')
        elif key.startswith('memory'):
            figures.append(
                f'{key} peak {r["mmdet_mib"]:.0f} → {r["mmpvt_mib"]:.0f} MiB, {r["mmpvt_cp_mib"]:.0f} with_cp'
            )
        elif key == 'gemm':
            figures.append(f'mmpvt {r["mmpvt_share"]:.0%} of the {r["gemm_gflops"]:.0f} GFLOP/s fp32 GEMM')
    return figures


def bench_check(run: BenchRun, ok: bool, out: str, result: Path, seconds: float, stage: str) -> Check:
    if not ok or not result.exists():
        return Check(stage, run.name, 'fail', tail(out) or 'no result file', round(seconds, 1))
    data = json.loads(result.read_text())
    figure = '; '.join([*bench_figures(data), f'{seconds:.0f} s'])
    return Check(stage, run.name, 'pass', figure, round(seconds, 1), detail=data)


def run_bench(
    run: BenchRun, device: str, sizes: dict[str, Any], folder: Path, tool: Any, python: str, stage: str
) -> Check:
    """One benchmark run through ``tool`` (the orchestrator's time-boxed subprocess runner)."""
    folder.mkdir(parents=True, exist_ok=True)
    result = folder / (run.name.replace(' ', '_') + '.json')
    result.unlink(missing_ok=True)
    start = time.monotonic()
    ok, out = tool('bench', bench_command(run, device, sizes, result, python), result.with_suffix('.log'), 240)
    return bench_check(run, ok, out, result, time.monotonic() - start, stage)
