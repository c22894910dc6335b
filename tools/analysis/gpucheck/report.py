"""The report of a GPU check: verdicts, ``report.json`` and ``report.md``, written after every check.

Every check ends with one of four verdicts:

* ``pass``: it ran and met its stated bound;
* ``fail``: it ran and missed it, or crashed;
* ``degraded``: it ran on a fallback that is not what users get (mmcv without CUDA ops);
* ``not run``: the plan named it but it could not start (no time left, a missing prerequisite), with the reason.

The command's exit status is 0 only when every check that the plan named passed.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

VERDICTS = ('pass', 'fail', 'degraded', 'not run')
MARKS = {'pass': 'ok  ', 'fail': 'FAIL', 'degraded': 'DEGR', 'not run': 'NRUN'}
DOCS_BEGIN, DOCS_END = '<!-- gpu-check:begin -->', '<!-- gpu-check:end -->'


@dataclass
class Check:
    """One check's outcome: ``figure`` is the one-line result, ``detail`` the numbers behind it."""

    stage: str
    name: str
    verdict: str
    figure: str
    seconds: float = 0.0
    detail: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.verdict not in VERDICTS:
            raise ValueError(f'verdict {self.verdict!r} is not one of {", ".join(VERDICTS)}')

    @property
    def key(self) -> str:
        return f'{self.stage}: {self.name}'


def write_json_atomically(path: Path, data: Any) -> None:
    """Whole or absent: a command killed while writing leaves the previous file."""
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


class Report:
    """``report.json`` and ``report.md`` in ``out``, rewritten after every check (the command may be killed)."""

    def __init__(self, out: Path, machine: dict[str, Any], planned: list[str] | None = None) -> None:
        self.out = out
        self.machine = machine
        self.planned = list(planned or [])
        self.checks: dict[str, Check] = {}
        self.started = time.monotonic()
        out.mkdir(parents=True, exist_ok=True)
        self.write()

    def add(self, check: Check) -> Check:
        self.checks[check.key] = check
        at = time.monotonic() - self.started
        print(f'[gpu-check] {at:5.0f} s {MARKS[check.verdict]} {check.key}: {check.figure}', flush=True)
        self.write()
        return check

    def as_dict(self) -> dict[str, Any]:
        return dict(
            machine=self.machine,
            updated=time.strftime('%Y-%m-%d %H:%M:%S %Z'),
            elapsed_s=round(time.monotonic() - self.started, 1),
            planned=self.planned,
            checks={k: asdict(c) for k, c in self.checks.items()},
            exit_status=self.exit_status(),
        )

    def exit_status(self) -> int:
        """0 only when every planned stage reported and every check passed (a stage never reached fails it)."""
        verdicts = [c.verdict for c in self.checks.values()]
        return 0 if verdicts and not unreached(self.as_dict_light()) and all(v == 'pass' for v in verdicts) else 1

    def as_dict_light(self) -> dict[str, Any]:
        return dict(planned=self.planned, checks={k: asdict(c) for k, c in self.checks.items()})

    def write(self) -> None:
        data = self.as_dict()
        write_json_atomically(self.out / 'report.json', data)
        tmp = self.out / 'report.md.tmp'
        tmp.write_text(render(data))
        os.replace(tmp, self.out / 'report.md')


def render(report: dict[str, Any]) -> str:
    """The markdown table: the machine on top, one row per check, then the checks never reached."""
    m = report.get('machine', {})
    lines = [
        f'GPU: {m.get("gpu", "?")} · driver {m.get("driver", "?")} · CUDA {m.get("cuda", "?")} (torch), '
        f'nvcc {m.get("nvcc", "?")} · torch {m.get("torch", "?")} · Python {m.get("python", "?")} · '
        f'{m.get("cores", "?")} cores · {report.get("updated", "")} · {report.get("elapsed_s", "?")} s',
        '',
        '| stage | check | verdict | figure | s |',
        '|---|---|---|---|---|',
    ]
    checks = report.get('checks', {})
    for check in checks.values():
        name, figure = (check[k].replace('|', '/').replace('\n', ' ') for k in ('name', 'figure'))
        lines.append(f'| {check["stage"]} | {name} | {check["verdict"]} | {figure} | {check["seconds"]:.0f} |')
    missing = unreached(report)
    if missing:
        lines.append(f'\nNot reached (the command ended first): {", ".join(missing)}.')
    counts = {v: sum(c['verdict'] == v for c in checks.values()) for v in VERDICTS}
    lines.append('\n' + ', '.join(f'{n} {v}' for v, n in counts.items()) + f'; exit status {report.get("exit_status")}')
    if m.get('rehearsal'):
        lines.append('\nRehearsal on the CPU (`--device cpu`): these are not GPU results.')
    return '\n'.join(lines) + '\n'


def unreached(report: dict[str, Any]) -> list[str]:
    """Planned stages without a single check in the report."""
    stages = {c['stage'] for c in report.get('checks', {}).values()}
    return [s for s in report.get('planned', []) if s not in stages]


def write_docs(docs: Path, report: dict[str, Any]) -> None:
    """Replace the text between the gpu-check markers of ``docs`` with the report's table."""
    text = docs.read_text()
    if DOCS_BEGIN not in text or DOCS_END not in text:
        raise SystemExit(f'error: {docs} has no {DOCS_BEGIN} ... {DOCS_END} section')
    head, rest = text.split(DOCS_BEGIN, 1)
    docs.write_text(f'{head}{DOCS_BEGIN}\n{render(report)}{DOCS_END}{rest.split(DOCS_END, 1)[1]}')


def machine_info(device: str) -> dict[str, Any]:
    """torch, CUDA, Python, cores, and on a GPU its name and driver."""
    import torch

    info: dict[str, Any] = dict(
        torch=torch.__version__,
        cuda=torch.version.cuda or 'none',
        python=platform.python_version(),
        cores=os.cpu_count(),
        cpu=cpu_model(),
        nvcc='not probed',
        rehearsal=device != 'cuda',
    )
    if device == 'cuda' and torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        props = torch.cuda.get_device_properties(0)
        info.update(
            gpu=f'{names[0]} ×{len(names)}',
            gpus=len(names),
            capability='.'.join(map(str, torch.cuda.get_device_capability(0))),
            memory_gib=round(props.total_memory / 2**30, 1),
            driver=nvidia_driver(),
        )
    else:
        info.update(gpu='none (rehearsal on the CPU)', gpus=0, driver='none')
    return info


def cpu_model() -> str:
    try:
        for line in Path('/proc/cpuinfo').read_text().splitlines():
            if line.startswith('model name'):
                return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or 'unknown'


def nvidia_driver() -> str:
    try:
        out = subprocess.run(
            ['nvidia-smi', '--query-gpu=driver_version', '--format=csv,noheader'],
            capture_output=True,
            text=True,
            timeout=20,
        )
        return out.stdout.split()[0] if out.returncode == 0 and out.stdout.strip() else 'unknown'
    except (OSError, subprocess.TimeoutExpired):
        return 'unknown'
