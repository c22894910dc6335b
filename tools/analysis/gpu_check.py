"""One offline command that proves mmpvt on a borrowed CUDA machine within one lease.

Here, with PyPI:      make gpu-wheels                       # -> gpu_wheels/ (git-ignored, about 30 MiB)
There, no network:    make gpu-check                        # every stage, within --budget (540 s)
                      make gpu-check STEP=build             # a second lease: only the mmcv build and RetinaNet
                      make gpu-check ARGS=--dry-run         # the plan with its estimates
Here, a rehearsal:    python tools/analysis/gpu_check.py run --device cpu   # the flow on the CPU, not a result
Back here:            python tools/analysis/gpu_check.py report --out DIR --docs docs/performance.md

The device tool's call: ``make gpu-check`` with ``carry=['gpu_wheels']``; the report goes to ``$OUT`` there
(``GPU_CHECK_OUT`` or ``--out`` elsewhere). The pieces, each readable alone, are in ``gpucheck/``:
``wheels`` (what travels and its offline install), ``build`` (nvcc probe, mmcv's CUDA build in the
background), ``parity``, ``training``, ``bench`` and ``ops`` (the checks), ``report`` (verdicts and files)
and ``plan`` (the stages, their estimates and the orchestrator).

Exit status: 0 only when every check of the plan passed; 1 otherwise (a failure, a degraded fallback, a
check not run); 2 when the command cannot start (no CUDA device, no wheel folder).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from gpucheck import plan, report, wheels

REPO = Path(__file__).resolve().parents[2]
PRECONDITION = 2  # exit status when the check cannot start


def default_out() -> str:
    """Where the report goes: GPU_CHECK_OUT, else the device tool's $OUT, else work_dirs/gpu_check/report."""
    return os.environ.get('GPU_CHECK_OUT') or os.environ.get('OUT') or str(REPO / 'work_dirs' / 'gpu_check' / 'report')


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('command', nargs='?', default='run', choices=['run', 'wheels', 'report'])
    parser.add_argument('--only', default='', help=f'comma-separated stages: {",".join(plan.STAGE_NAMES)}')
    parser.add_argument('--dry-run', action='store_true', help='print the plan and what is missing, run nothing')
    parser.add_argument(
        '--out', default=default_out(), help='report.json, report.md, logs.tar.gz (default: %(default)s)'
    )
    parser.add_argument('--work', default=str(REPO / 'work_dirs' / 'gpu_check'), help='builds, runs, logs')
    parser.add_argument('--wheels', default=os.environ.get('GPU_WHEELS', str(REPO / 'gpu_wheels')))
    parser.add_argument('--budget', type=float, default=540.0, help='seconds for the whole plan (default 540)')
    parser.add_argument('--device', default='cuda', choices=['cuda', 'cpu'], help='cpu: a rehearsal, not a result')
    parser.add_argument('--build-cuda', action='store_true', help='try the CUDA build even without a CUDA device')
    parser.add_argument('--python-version', default=wheels.TARGET_PYTHON, help='wheels: the target Python')
    parser.add_argument('--docs', default=None, help='report: write the table into this markdown file')
    args = parser.parse_args(argv)
    if args.budget <= 0:
        parser.error('--budget must be positive')
    try:
        args.stages = plan.select([s.strip() for s in args.only.split(',') if s.strip()])
    except ValueError as err:
        parser.error(str(err))
    return args


def cuda_status() -> tuple[bool, str]:
    """(a CUDA device is usable, why not)."""
    try:
        import torch
    except ImportError as err:
        return False, f'torch is not importable ({err})'
    if torch.version.cuda is None:
        return False, f'torch {torch.__version__} is a CPU build'
    if not torch.cuda.is_available():
        return False, f'torch.cuda.is_available() is False (torch {torch.__version__}, CUDA {torch.version.cuda})'
    return True, torch.cuda.get_device_name(0)


def preconditions(args: argparse.Namespace) -> list[str]:
    problems = []
    if args.device == 'cuda':
        ok, why = cuda_status()
        if not ok:
            problems.append(f'no CUDA device: {why} (a rehearsal on the CPU: --device cpu)')
    folder = Path(args.wheels)
    if not folder.is_dir():
        problems.append(
            f'wheel folder {folder} not found: make it with `make gpu-wheels` on a machine that reaches PyPI and '
            "bring it along (the device tool: carry=['gpu_wheels'])"
        )
    elif args.device == 'cuda' and not any(folder.glob(f'{wheels.MMCV[0]}-{wheels.MMCV[1]}.tar.gz')):
        problems.append(f'{folder} has no {wheels.MMCV[0]}-{wheels.MMCV[1]}.tar.gz: run `make gpu-wheels` again')
    return problems


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == 'wheels':
        return wheels.make_wheels(Path(args.wheels), args.python_version)
    if args.command == 'report':
        path = Path(args.out) / 'report.json'
        if not path.is_file():
            print(f'error: no report at {path}: give --out the folder the check wrote into', file=sys.stderr)
            return PRECONDITION
        data = json.loads(path.read_text())
        if args.docs:
            report.write_docs(Path(args.docs), data)
        print(report.render(data))
        return 0
    problems = preconditions(args)
    if args.dry_run:
        print(plan.describe(args.stages, args.budget))
        print(f'results: {args.out}/report.json, report.md, logs.tar.gz (after every check); work: {args.work}')
        print('exit 0 only if every check passes; a CUDA-ops fallback is degraded, a check never reached not run')
        for problem in problems:
            print(f'would stop: {problem}')
        return 0
    for problem in problems:
        print(f'error: {problem}', file=sys.stderr)
    if problems:
        return PRECONDITION
    ctx = plan.Context(args)
    status = plan.run_plan(ctx, args.stages)
    assert ctx.report is not None
    print('\n' + report.render(ctx.report.as_dict()))
    return status


if __name__ == '__main__':
    sys.exit(main())
