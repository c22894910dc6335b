"""One offline command that proves mmpvt on a borrowed CUDA machine.

Here, with PyPI:      make gpu-wheels                  # -> gpu_wheels/ (git-ignored, about 29 MiB)
There, no network:    make gpu-check STEP=setup        # then STEP=parity, STEP=train, STEP=bench
                      make gpu-check STEP=all          # the four in one command (longer than 10 min)
                      make gpu-check STEP=bench ARGS=--dry-run
Back here:            python tools/analysis/gpu_check.py report --docs docs/performance.md

The borrowed machine has one or more H100/H200, 16 cores, Python 3.12 with a CUDA torch,
torchvision, timm, opencv, onnxruntime, pytest, ninja and nvcc, but no network and none of
mmengine, mmcv, mmdet, mmseg; each command may run 10 minutes, and the machine stays set up only
between commands that follow each other. So each step fits a time budget (``--budget``, 570 s) and
leaves what the next one needs: ``setup`` writes ``state.json`` into the results folder
(``GPU_CHECK_OUT``, default ``work_dirs/gpu_check/``), the others read it.

- ``wheels`` (``make gpu-wheels``): ``pip download --no-deps`` of an explicit list (``CARRIED``)
  for CPython 3.12 manylinux x86-64, plus mmcv 2.1.0's sdist; checks that every requirement of
  every file is carried, assumed on the image (``ASSUMED``: torch, torchvision, numpy, Pillow,
  PyYAML, opencv) or stood in for (``STAND_INS``: scipy, 35 MiB, over half the budget); prints the
  list and the total, which must stay under ``BUDGET_MIB``.
- ``setup``: installs the carried wheels that the machine lacks (``pip install --no-index --no-deps``,
  so its torch stays), builds mmcv's ops against its torch, CUDA ops where the machine's nvcc
  compiles them (``MMCV_WITH_OPS=1 FORCE_CUDA=1``, time-boxed), else CPU ops with the reason
  recorded (the checks that need CUDA ops are then skipped), and imports everything.
- ``parity``: mmpvt against mmdet's ``PyramidVisionTransformer(V2)`` with the same weights on the
  GPU (PVT-S, PVTv2-b2): fp32 with TF32 off, fp16 and bf16 autocast, SRA's SDPA path against its
  explicit path in fp16, mmpvt on CUDA against mmpvt on the CPU.
- ``train``: 50 iterations of the toy RetinaNet-PVT-T and Semantic FPN-PVT-T with ``--amp`` through
  ``tools/train.py``, then ``tools/test.py``; with 2 GPUs also ``tools/dist_train.sh`` / ``dist_test.sh``.
- ``bench``: ``tools/analysis/benchmark.py --device cuda``, fp32 and ``--amp fp16``, PVT-S and PVTv2-b2.
- ``report``: the table of ``report.json`` again; ``--docs`` writes it into docs/performance.md.

Every step ends with a markdown table (GPU, driver, CUDA, torch; each check's verdict and figure)
and updates ``report.json`` and ``report.md`` in the results folder. Exit status: 0 when every check
that ran passed, 1 when one failed, 2 when a precondition is missing (no CUDA device, no wheel
folder, no setup). ``--device cpu`` rehearses the steps on a machine without a GPU (not a result).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
STEPS = ('setup', 'parity', 'train', 'bench')
PRECONDITION = 2  # exit status when the check cannot start

# ----------------------------------------------------------------------------- what travels
TARGET_PYTHON = '3.12'
#: pip expands each manylinux tag to the older glibc versions, but not 2_28 down to 2014.
TARGET_PLATFORMS = ('manylinux_2_28_x86_64', 'manylinux2014_x86_64')
MMCV = ('mmcv', '2.1.0')
PINNED = {'mmengine': '0.10.7', 'mmdet': '3.3.0', 'mmsegmentation': '1.2.2'}
#: Carried as wheels: the OpenMMLab packages and each dependency that a CUDA image may lack.
CARRIED = (
    *(f'{name}=={version}' for name, version in PINNED.items()),
    # mmengine: configs (addict, yapf), logging (rich, termcolor), the Visualizer (matplotlib)
    'addict', 'yapf', 'platformdirs', 'rich', 'markdown-it-py', 'mdurl', 'pygments', 'termcolor',
    'matplotlib', 'contourpy', 'cycler', 'fonttools', 'kiwisolver', 'pyparsing', 'python-dateutil', 'six', 'tzdata',
    'packaging',
    # mmdet: COCO API and masks, tables, progress bars
    'pycocotools', 'shapely', 'terminaltables', 'tqdm',
    # mmseg: tables, and the tokenizer that mmseg.utils imports
    'prettytable', 'wcwidth', 'ftfy', 'regex',
    # the mmcv build only (into a private folder, never into the machine's environment)
    'setuptools<70', 'wheel', 'ninja',
)  # fmt: skip
#: Needed only to build mmcv: kept apart so the machine's setuptools is not downgraded.
BUILD_ONLY = ('setuptools', 'wheel')
#: On the image already, and not carried.
ASSUMED = {
    'torch': "the machine's CUDA build must be the one mmcv's ops are built against",
    'torchvision': 'on the image, bound to its torch',
    'numpy': 'torchvision and opencv need it',
    'pillow': 'torchvision needs it',
    'pyyaml': 'timm needs it',
    'opencv-python': 'cv2 is on the image; the wheel alone is about 60 MiB',
}
#: Too heavy to carry; imported at module level by mmdet and mmseg, used by nothing the checks run.
STAND_INS = {
    'scipy': 'its wheel is 35 MiB, over half the budget; where the image lacks it, setup puts a stand-in on '
    'PYTHONPATH whose functions raise when called (mmdet/mmseg only import them at module level)',
}
STAND_IN_MODULES = ('optimize', 'ndimage', 'interpolate', 'sparse', 'sparse/csgraph', 'special', 'spatial', 'io')
BUDGET_MIB = 60


def canonical(name: str) -> str:
    return re.sub(r'[-_.]+', '-', name).lower()


def dist_of(path: Path) -> tuple[str, str]:
    """(canonical name, version) of a wheel or sdist file name."""
    stem = path.name.removesuffix('.tar.gz').removesuffix('.whl')
    name, version = stem.split('-')[:2]
    return canonical(name), version


def requirements_of(path: Path) -> list[str]:
    """Requires-Dist of a wheel, or requirements/runtime.txt of an sdist (mmcv's)."""
    if path.name.endswith('.whl'):
        with zipfile.ZipFile(path) as zf:
            meta = next(n for n in zf.namelist() if n.endswith('.dist-info/METADATA'))
            text = zf.read(meta).decode()
        return [line.split(':', 1)[1].strip() for line in text.splitlines() if line.startswith('Requires-Dist:')]
    with tarfile.open(path) as tf:
        member = next(m for m in tf.getmembers() if m.name.endswith('requirements/runtime.txt'))
        text = tf.extractfile(member).read().decode()
    return [line.strip() for line in text.splitlines() if line.strip() and not line.startswith('#')]


def missing_requirements(files: list[Path], python_version: str = TARGET_PYTHON) -> list[str]:
    """Requirements of the files (on Linux x86-64, no extras) that are neither carried, assumed nor stood in for."""
    from packaging.requirements import Requirement

    env = dict(
        python_version=python_version,
        python_full_version=python_version + '.0',
        sys_platform='linux',
        platform_system='Linux',
        platform_machine='x86_64',
        os_name='posix',
        implementation_name='cpython',
        platform_python_implementation='CPython',
        extra='',
    )
    have = {dist_of(f)[0] for f in files} | set(ASSUMED) | set(STAND_INS)
    missing = []
    for f in files:
        for line in requirements_of(f):
            req = Requirement(line)
            if (req.marker is None or req.marker.evaluate(env)) and canonical(req.name) not in have:
                missing.append(f'{canonical(req.name)} (needed by {f.name})')
    return sorted(set(missing))


def run_logged(cmd: list[str], **kwargs: Any) -> subprocess.CompletedProcess:
    print('$ ' + ' '.join(map(str, cmd)), flush=True)
    return subprocess.run(cmd, check=True, **kwargs)


def make_wheels(dest: Path, python_version: str = TARGET_PYTHON) -> int:
    """Download the wheels and mmcv's sdist into ``dest`` (replaced whole), check and print them."""
    tmp = dest.with_name(dest.name + '.tmp')
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    pip = [sys.executable, '-m', 'pip', '--disable-pip-version-check', 'download', '--no-deps', '--dest', str(tmp)]
    target = ['--python-version', python_version, '--implementation', 'cp', '--only-binary=:all:']
    target += [f'--platform={p}' for p in TARGET_PLATFORMS]
    run_logged([*pip, *target, *CARRIED])
    # mmcv's setup.py imports pkg_resources (setuptools < 70) and torch just to give its metadata.
    tools = install_buildtools(tmp, tmp / '.buildtools')
    run_logged([*pip, '--no-binary=:all:', '--no-build-isolation', f'{MMCV[0]}=={MMCV[1]}'], env=with_path(tools))
    shutil.rmtree(tmp / '.buildtools')
    files = sorted(tmp.iterdir())
    missing = missing_requirements(files, python_version)
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    total = sum(f.stat().st_size for f in dest.iterdir())
    for f in sorted(dest.iterdir(), key=lambda f: -f.stat().st_size):
        print(f'{f.stat().st_size / 2**20:8.2f} MiB  {f.name}')
    print(f'{total / 2**20:8.2f} MiB  total, {len(files)} files in {dest} (budget {BUDGET_MIB} MiB)')
    print('not carried: ' + '; '.join(f'{k} ({v})' for k, v in {**ASSUMED, **STAND_INS}.items()))
    if missing:
        print('error: requirements neither carried nor assumed: ' + ', '.join(missing), file=sys.stderr)
        return 1
    if total > BUDGET_MIB * 2**20:
        print(f'error: {total / 2**20:.1f} MiB is over the {BUDGET_MIB} MiB that may travel', file=sys.stderr)
        return 1
    return 0


# ----------------------------------------------------------------------------- offline install
def plan_install(files: Iterable[Path], installed: Callable[[str], str | None]) -> tuple[list[Path], list[str]]:
    """(wheels to install, 'name version' kept): a missing distribution is installed, one the machine has
    is kept (its numpy, its packaging...), except the pinned OpenMMLab ones at another version."""
    to_install, kept = [], []
    for path in sorted(files):
        if not path.name.endswith('.whl'):
            continue
        name, version = dist_of(path)
        if name in BUILD_ONLY:
            continue
        have = installed(name)
        if have is None or (name in PINNED and have != version):
            to_install.append(path)
        else:
            kept.append(f'{name} {have}')
    return to_install, kept


def installed_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def pip_install(files: list[Path], *, target: Path | None = None, force: bool = False) -> None:
    """``pip install --no-index --no-deps`` of these files: no index is asked, no dependency pulled in."""
    cmd = [sys.executable, '-m', 'pip', '--disable-pip-version-check', 'install', '--no-index', '--no-deps']
    cmd += ['--force-reinstall'] if force else []
    cmd += ['--target', str(target)] if target else []
    env = {**os.environ, 'PIP_CONFIG_FILE': os.devnull, 'PIP_ROOT_USER_ACTION': 'ignore'}
    env.pop('PIP_FIND_LINKS', None)
    out = subprocess.run([*cmd, *map(str, files)], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise RuntimeError(f'pip install failed ({out.returncode}):\n{out.stdout[-2000:]}{out.stderr[-2000:]}')


def install_buildtools(wheels: Path, dest: Path) -> Path:
    """setuptools < 70 and wheel into a private folder, for PYTHONPATH during the mmcv build."""
    if not (dest / 'setuptools').is_dir():
        files = [f for f in wheels.glob('*.whl') if dist_of(f)[0] in BUILD_ONLY]
        pip_install(files, target=dest)
    return dest


def with_path(*dirs: Path, env: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ if env is None else env)
    env['PYTHONPATH'] = os.pathsep.join([*map(str, dirs), *filter(None, [env.get('PYTHONPATH')])])
    return env


def write_stand_ins(dest: Path) -> Path:
    """A ``scipy`` whose every function raises when called, so mmdet and mmseg import without it."""
    doc = '"""Stand-in written by tools/analysis/gpu_check.py: scipy is not on this machine."""\n'
    getattr_ = (
        '\n\ndef __getattr__(name):\n'
        '    def missing(*args, **kwargs):\n'
        "        raise ImportError(f'scipy is not installed here (gpu_check stand-in): {__name__}.{name}')\n\n"
        '    return missing\n'
    )
    for module in ('', *STAND_IN_MODULES):
        path = dest / 'scipy' / module / '__init__.py'
        path.parent.mkdir(parents=True, exist_ok=True)
        # The package itself has no __getattr__: ``from scipy import interpolate`` must find the submodule.
        path.write_text(doc + (getattr_ if module else "__version__ = '0+stand-in'\n"))
    return dest


# ----------------------------------------------------------------------------- the mmcv build
@dataclass
class Build:
    flavour: str  # 'cuda' or 'cpu'
    ok: bool
    seconds: float
    reason: str = ''
    wheel: str = ''
    log: str = ''


def find_nvcc(env: dict[str, str]) -> str | None:
    """The nvcc that torch.utils.cpp_extension would use (CUDA_HOME, CUDA_PATH, PATH, /usr/local/cuda)."""
    for var in ('CUDA_HOME', 'CUDA_PATH'):
        if env.get(var):
            return str(Path(env[var]) / 'bin' / 'nvcc')
    found = shutil.which('nvcc', path=env.get('PATH', ''))
    return found or (str(p) if (p := Path('/usr/local/cuda/bin/nvcc')).exists() else None)


def probe_nvcc(env: dict[str, str], torch_cuda: str | None, arch: str, workdir: Path) -> tuple[bool, str]:
    """Does nvcc run, match torch's CUDA major version and compile a kernel for ``arch`` (e.g. '90')?"""
    nvcc = find_nvcc(env)
    if not nvcc:
        return False, 'no nvcc: CUDA_HOME is unset and none is on PATH'
    try:
        out = subprocess.run([nvcc, '--version'], capture_output=True, text=True, env=env, timeout=60)
    except OSError as err:
        return False, f'{nvcc} does not run: {err}'
    if out.returncode != 0:
        return False, f'`{nvcc} --version` failed ({out.returncode}): {tail(out.stdout + out.stderr)}'
    match = re.search(r'release (\d+)\.(\d+)', out.stdout)
    version = '.'.join(match.groups()) if match else 'unknown'
    if torch_cuda and match and match.group(1) != torch_cuda.split('.')[0]:
        return False, f'nvcc {version} but torch was built with CUDA {torch_cuda} (torch refuses another major)'
    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / 'probe.cu'
    source.write_text('__global__ void twice(float *x) { x[threadIdx.x] *= 2.f; }\n')
    cmd = [nvcc, '-c', str(source), '-o', str(workdir / 'probe.o'), f'-arch=sm_{arch}']
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    if out.returncode != 0:
        return False, f'nvcc {version} cannot compile for sm_{arch}: {tail(out.stdout + out.stderr)}'
    return True, f'nvcc {version} ({nvcc}) compiles for sm_{arch}'


#: pip's own lines around a failed build: they say that it failed, not why.
PIP_NOISE = re.compile(r'This error originates|Failed (building wheel|to build)|subprocess-exited-with-error|^[×│╰]')


def tail(text: str, lines: int = 3) -> str:
    """The lines that say what went wrong: the first error lines (a compiler's first error is the cause) and
    the last one, else the last lines."""
    rows = [r.strip() for r in text.splitlines() if r.strip() and not PIP_NOISE.search(r.strip())]
    errors = [r for r in rows if re.search(r'error|fatal|killed', r, re.I)]
    picked = list(dict.fromkeys(errors[: lines - 1] + errors[-1:])) if errors else rows[-lines:]
    return ' | '.join(picked)[:600]


def kill_tree(pid: int) -> None:
    """SIGKILL a process and every descendant. ninja starts each compiler in a process group of its own,
    so killing the build's group would leave the compilers running."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGSTOP)  # it starts nothing more while its tree goes
    for _ in range(10):
        tree = descendants(pid)
        if not tree:
            break
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for p in tree:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, sig)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def descendants(pid: int) -> list[int]:
    """Every living (not zombie) descendant of ``pid``, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path('/proc').glob('[0-9]*/stat'):
        try:
            state, ppid = stat.read_text().rsplit(')', 1)[1].split()[:2]
        except OSError:
            continue
        if state != 'Z':
            children.setdefault(int(ppid), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def run_build(src: Path, dist: Path, env: dict[str, str], timeout: float, log: Path, flavour: str) -> Build:
    """``pip wheel`` of an unpacked source tree (in-tree, so a timed-out ninja build resumes next time)."""
    cmd = [sys.executable, '-m', 'pip', '--disable-pip-version-check', 'wheel', '--no-index', '--no-deps']
    cmd += ['--no-build-isolation', '-w', str(dist), str(src)]
    dist.mkdir(parents=True, exist_ok=True)
    start = time.monotonic()
    with open(log, 'w') as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        try:
            code = proc.wait(timeout=max(timeout, 1))
        except subprocess.TimeoutExpired:
            kill_tree(proc.pid)
            proc.wait()
            code = None
    seconds = time.monotonic() - start
    text = log.read_text(errors='replace')
    if code is None:
        return Build(flavour, False, seconds, f'timed out after {timeout:.0f} s', log=str(log))
    wheels = sorted(dist.glob('*.whl'), key=lambda p: p.stat().st_mtime)
    if code != 0 or not wheels:
        return Build(flavour, False, seconds, f'exit {code}: {tail(text)}', log=str(log))
    return Build(flavour, True, seconds, wheel=str(wheels[-1]), log=str(log))


def build_ops(
    *,
    cuda_device: bool,
    probe: Callable[[], tuple[bool, str]],
    builder: Callable[[str, float], Build],
    deadline: float,
    cpu_reserve: float,
    have_cpu_ops: bool = False,
) -> dict[str, Any]:
    """Build CUDA ops if nvcc can, else CPU ops; returns ``ops`` ('cuda', 'cpu' or None) and the reason."""
    attempts: list[Build] = []
    if not cuda_device:
        reason = 'no CUDA device'
    else:
        ok, detail = probe()
        if not ok:
            reason = f'nvcc probe failed: {detail}'
        else:
            budget = deadline - time.monotonic() - (0 if have_cpu_ops else cpu_reserve)
            if budget < 60:
                reason = f'only {budget:.0f} s left for the CUDA build'
            else:
                attempts.append(builder('cuda', budget))
                if attempts[-1].ok:
                    return dict(ops='cuda', reason=detail, attempts=[asdict(b) for b in attempts])
                reason = f'CUDA build failed: {attempts[-1].reason}'
                if attempts[-1].reason.startswith('timed out'):
                    reason += ' (run STEP=setup again at once: the build resumes where it stopped)'
    if have_cpu_ops:
        return dict(ops='cpu', reason=reason, attempts=[asdict(b) for b in attempts], kept=True)
    attempts.append(builder('cpu', deadline - time.monotonic()))
    if not attempts[-1].ok:
        reason += f'; CPU build failed too: {attempts[-1].reason}'
    return dict(ops='cpu' if attempts[-1].ok else None, reason=reason, attempts=[asdict(b) for b in attempts])


# ----------------------------------------------------------------------------- context and report
@dataclass
class Check:
    step: str
    name: str
    verdict: str  # 'pass', 'fail' or 'skip'
    figure: str
    detail: dict[str, Any] | None = None


class Context:
    """Paths, budget and the results of one command; checks go into report.json as they finish."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out = Path(args.out)
        self.wheels = Path(args.wheels)
        self.build = Path(args.build_dir)
        self.device = args.device
        self.checks: list[Check] = []
        self.deadline = time.monotonic() + args.budget
        self._machine: dict[str, Any] | None = None

    def left(self) -> float:
        return self.deadline - time.monotonic()

    @property
    def state_path(self) -> Path:
        return self.out / 'state.json'

    def state(self) -> dict[str, Any]:
        return json.loads(self.state_path.read_text()) if self.state_path.exists() else {}

    def env(self) -> dict[str, str]:
        """Environment of every subprocess: the checkout and the stand-ins importable."""
        dirs = [REPO] + ([Path(self.state()['stand_ins'])] if self.state().get('stand_ins') else [])
        return with_path(*dirs)

    def add(self, check: Check) -> Check:
        self.checks.append(check)
        mark = {'pass': 'ok  ', 'fail': 'FAIL', 'skip': 'skip'}[check.verdict]
        print(f'[gpu-check] {mark} {check.step}: {check.name}: {check.figure}', flush=True)
        if self._machine is None or self._machine.get('nvcc') == 'not probed':
            self._machine = machine_info(self.device, self.state())
        update_report(self.out, [check], self._machine)
        return check


def machine_info(device: str, state: dict[str, Any]) -> dict[str, Any]:
    import torch

    info = dict(
        torch=torch.__version__,
        cuda=torch.version.cuda or 'none',
        python=platform.python_version(),
        cores=os.cpu_count(),
        nvcc=state.get('nvcc', 'not probed'),
        rehearsal=device != 'cuda',
    )
    if device == 'cuda' and torch.cuda.is_available():
        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        info.update(gpu=f'{names[0]} ×{len(names)}', gpus=len(names), driver=nvidia_driver())
    else:
        info.update(gpu='none (rehearsal on the CPU)', gpus=0, driver='none')
    return info


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


def update_report(out: Path, checks: list[Check], machine: dict[str, Any]) -> dict[str, Any]:
    """Merge these checks (by step and name) into ``out/report.json`` and rewrite ``report.md``."""
    out.mkdir(parents=True, exist_ok=True)
    path = out / 'report.json'
    report = json.loads(path.read_text()) if path.exists() else {'checks': {}}
    report['machine'] = machine
    report['updated'] = time.strftime('%Y-%m-%d %H:%M:%S %Z')
    for check in checks:
        report['checks'][f'{check.step}: {check.name}'] = asdict(check)
    tmp = path.with_suffix('.tmp')
    tmp.write_text(json.dumps(report, indent=2, default=str))
    tmp.replace(path)
    (out / 'report.md').write_text(render_report(report))
    return report


def render_report(report: dict[str, Any]) -> str:
    """The markdown table: the machine on top, one row per check."""
    m = report.get('machine', {})
    lines = [
        f'GPU: {m.get("gpu", "?")} · driver {m.get("driver", "?")} · CUDA {m.get("cuda", "?")} (torch), '
        f'nvcc {m.get("nvcc", "?")} · torch {m.get("torch", "?")} · Python {m.get("python", "?")} · '
        f'{m.get("cores", "?")} cores · {report.get("updated", "")}',
        '',
        '| step | check | verdict | figure |',
        '|---|---|---|---|',
    ]
    for check in report.get('checks', {}).values():
        figure = check['figure'].replace('|', '/')
        lines.append(f'| {check["step"]} | {check["name"]} | {check["verdict"]} | {figure} |')
    if m.get('rehearsal'):
        lines.append('\nRehearsal on the CPU (`--device cpu`): these are not GPU results.')
    return '\n'.join(lines) + '\n'


DOCS_BEGIN, DOCS_END = '<!-- gpu-check:begin -->', '<!-- gpu-check:end -->'


def write_docs(docs: Path, report: dict[str, Any]) -> None:
    """Replace the text between the gpu-check markers of ``docs`` with the report's table."""
    text = docs.read_text()
    if DOCS_BEGIN not in text or DOCS_END not in text:
        raise SystemExit(f'error: {docs} has no {DOCS_BEGIN} ... {DOCS_END} section')
    head, rest = text.split(DOCS_BEGIN, 1)
    body = render_report(report)
    docs.write_text(f'{head}{DOCS_BEGIN}\n{body}{DOCS_END}{rest.split(DOCS_END, 1)[1]}')


# ----------------------------------------------------------------------------- preconditions
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


def preconditions(args: argparse.Namespace, steps: list[str]) -> list[str]:
    problems = []
    if args.device == 'cuda':
        ok, why = cuda_status()
        if not ok:
            problems.append(f'no CUDA device: {why}')
    if 'setup' in steps and not Path(args.wheels).is_dir():
        problems.append(
            f'wheel folder {args.wheels} not found: make it with `make gpu-wheels` on a machine that reaches '
            'PyPI and bring it along with the checkout'
        )
    return problems


# ----------------------------------------------------------------------------- step: setup
def step_setup(ctx: Context) -> None:
    import torch

    state: dict[str, Any] = dict(torch=torch.__version__, torch_cuda=torch.version.cuda, python=sys.version.split()[0])
    missing = [name for name in ('numpy', 'PIL', 'yaml', 'cv2') if not importable(name)]
    if missing:
        ctx.add(Check('setup', 'assumed packages', 'fail', f'not on this machine: {", ".join(missing)}'))
        return
    start = time.monotonic()
    to_install, kept = plan_install(ctx.wheels.glob('*.whl'), installed_version)
    if to_install:
        pip_install(to_install, force=True)
    state.update(installed=[f'{n} {v}' for n, v in map(dist_of, to_install)], kept=kept)
    state.update(compat_path(ctx))
    ctx.add(
        Check(
            'setup',
            'offline install',
            'pass',
            f'{len(to_install)} wheels installed, {len(kept)} kept, torch {torch.__version__} kept, '
            f'{time.monotonic() - start:.0f} s' + ''.join(f'; {note}' for note in state.get('compat', [])),
        )
    )
    state.update(mmcv_step(ctx, state))
    ctx.state_path.write_text(json.dumps(state, indent=2))
    verify_imports(ctx, state)
    ctx.state_path.write_text(json.dumps(state, indent=2))


def compat_path(ctx: Context) -> dict[str, Any]:
    """A folder for every subprocess's PYTHONPATH with what the machine lacks and cannot get whole: the scipy
    stand-in, and ``pkg_resources`` (setuptools >= 81 dropped it; mmengine 0.10.7 imports it to resolve
    ``mmdet::`` base configs) copied from the carried setuptools 69."""
    folder, notes = ctx.build / 'stand_ins', []
    if not importable('scipy'):
        write_stand_ins(folder)
        notes.append('scipy: stand-in')
    if not importable('pkg_resources'):
        tools = install_buildtools(ctx.wheels, ctx.build / 'buildtools')
        shutil.rmtree(folder / 'pkg_resources', ignore_errors=True)
        shutil.copytree(tools / 'pkg_resources', folder / 'pkg_resources')
        notes.append('pkg_resources from setuptools 69')
    return dict(stand_ins=str(folder), compat=notes) if notes else {}


def importable(module: str) -> bool:
    return subprocess.run([sys.executable, '-c', f'import {module}'], capture_output=True).returncode == 0


def mmcv_ops_flavour() -> str | None:
    """'cuda' or 'cpu' for an installed mmcv 2.1.0 with compiled ops, else None."""
    code = 'from mmcv.ops import get_compiling_cuda_version as v; print(v())'
    if installed_version('mmcv') != MMCV[1]:
        return None
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True)
    if out.returncode != 0:
        return None
    return 'cpu' if 'not available' in out.stdout else 'cuda'


def mmcv_step(ctx: Context, state: dict[str, Any]) -> dict[str, Any]:
    import torch

    have = mmcv_ops_flavour()
    if have == 'cuda' or (have == 'cpu' and ctx.device != 'cuda'):
        ctx.add(Check('setup', 'mmcv ops', 'pass', f'mmcv {MMCV[1]} with {have} ops already installed, kept'))
        return dict(mmcv_ops=have, mmcv_reason='kept')
    sdist = next(ctx.wheels.glob(f'{MMCV[0]}-{MMCV[1]}.tar.gz'), None)
    if sdist is None:
        ctx.add(Check('setup', 'mmcv ops', 'fail', f'{MMCV[0]}-{MMCV[1]}.tar.gz is not in {ctx.wheels}'))
        return dict(mmcv_ops=None)
    tools = install_buildtools(ctx.wheels, ctx.build / 'buildtools')
    jobs = os.cpu_count() or 2
    arch = ''
    if ctx.device == 'cuda':
        major, minor = torch.cuda.get_device_capability(0)
        arch = f'{major}{minor}'

    def builder(flavour: str, timeout: float) -> Build:
        src = ctx.build / f'mmcv-{flavour}'
        if not src.is_dir():
            with tarfile.open(sdist) as tf:
                tf.extractall(ctx.build / 'unpack', filter='data')
            (ctx.build / 'unpack' / f'{MMCV[0]}-{MMCV[1]}').rename(src)
        env = with_path(tools, env={**os.environ, 'MMCV_WITH_OPS': '1', 'MAX_JOBS': str(jobs)})
        if flavour == 'cuda':
            env.update(FORCE_CUDA='1', TORCH_CUDA_ARCH_LIST=f'{arch[:-1]}.{arch[-1]}')
        else:
            env.update(FORCE_CUDA='0', CUDA_VISIBLE_DEVICES='')
        print(f'[gpu-check] building mmcv {MMCV[1]} {flavour} ops with {jobs} jobs (time box {timeout:.0f} s)')
        build = run_build(
            src, ctx.build / f'dist-{flavour}', env, timeout, ctx.out / f'mmcv_build_{flavour}.log', flavour
        )
        trim_log(Path(build.log))
        print(f'[gpu-check] mmcv {flavour} build: {"ok" if build.ok else build.reason} ({build.seconds:.0f} s)')
        return build

    nvcc = {}

    def probe() -> tuple[bool, str]:
        ok, detail = probe_nvcc(dict(os.environ), torch.version.cuda, arch, ctx.build / 'probe')
        nvcc['detail'] = detail
        return ok, detail

    result = build_ops(
        cuda_device=ctx.device == 'cuda',
        probe=probe,
        builder=builder,
        deadline=ctx.deadline - 60,  # leave a minute for the install and the import check
        cpu_reserve=max(150.0, 2400.0 / jobs),
        have_cpu_ops=have == 'cpu',
    )
    built = [b for b in result['attempts'] if b['ok']]
    if built:
        pip_install([Path(built[-1]['wheel'])], force=True)
    seconds = sum(b['seconds'] for b in result['attempts'])
    if result['ops'] is None:
        verdict, figure = 'fail', f'no ops built ({seconds:.0f} s): {result["reason"]}'
    elif result['ops'] == 'cuda':
        verdict, figure = 'pass', f'CUDA ops built in {seconds:.0f} s ({result["reason"]})'
    else:
        skip = ' (RetinaNet training and the detector benchmark will be skipped)' if ctx.device == 'cuda' else ''
        verdict, figure = 'pass', f'CPU ops ({seconds:.0f} s){skip}: {result["reason"]}'
    ctx.add(Check('setup', 'mmcv ops', verdict, figure, detail=result))
    return dict(mmcv_ops=result['ops'], mmcv_reason=result['reason'], nvcc=nvcc.get('detail', 'not probed'))


def trim_log(path: Path, keep: int = 2**20) -> None:
    """Keep the last MiB of a build log (results files must stay small)."""
    if path.exists() and path.stat().st_size > keep:
        data = path.read_bytes()[-keep:]
        path.write_bytes(b'[... earlier output cut ...]\n' + data)


def verify_imports(ctx: Context, state: dict[str, Any]) -> None:
    modules = 'mmcv, mmcv.ops, mmdet.models, mmdet.datasets, mmdet.evaluation, mmseg.models, mmseg.datasets'
    code = f'import {modules}, mmseg.evaluation, mmpvt; import mmcv, mmdet, mmseg, mmengine; '
    code += 'print(mmengine.__version__, mmcv.__version__, mmdet.__version__, mmseg.__version__)'
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=ctx.env(), cwd=REPO)
    ok = out.returncode == 0
    state['imports'] = ok
    figure = 'mmengine {} mmcv {} mmdet {} mmseg {}'.format(*out.stdout.split()) if ok else tail(out.stderr)
    ctx.add(Check('setup', 'imports', 'pass' if ok else 'fail', figure))


# ----------------------------------------------------------------------------- step: parity
#: Stated tolerances: max |difference| <= TOL × max |reference|, per check.
TOL = {'fp32': 1e-5, 'fp16': 1e-2, 'bf16': 5e-2, 'sdpa_fp16': 5e-3, 'cuda_cpu': 1e-5}
PARITY_ARCHS = {'small': 'PVT-S', 'b2': 'PVTv2-b2'}
PARITY_SIZE = (512, 672)


def build_pair(arch: str, seed: int = 0) -> tuple[Any, Any]:
    """(mmdet's backbone after its own init_weights, mmpvt's with the same weights, mmdet's eps)."""
    import inspect

    import torch
    from mmdet.models.backbones.pvt import PyramidVisionTransformer as MMDetV1
    from mmdet.models.backbones.pvt import PyramidVisionTransformerV2 as MMDetV2

    from mmpvt.convert import convert_state_dict
    from mmpvt.models.pvt import PyramidVisionTransformer

    torch.manual_seed(seed)
    theirs = (MMDetV2 if arch.startswith('b') else MMDetV1)(num_layers=[3, 4, 6, 3])
    theirs.init_weights()
    eps = {'embed_norm_eps': 1e-6} if 'embed_norm_eps' in inspect.signature(PyramidVisionTransformer).parameters else {}
    ours = PyramidVisionTransformer.from_arch(arch, **eps)
    ours.load_state_dict(convert_state_dict(theirs.state_dict(), ours), strict=True)
    return theirs.eval(), ours.eval()


def relative_diff(refs: Any, outs: Any) -> float:
    diff = max((r.float() - o.float()).abs().max().item() for r, o in zip(refs, outs, strict=True))
    scale = max(r.float().abs().max().item() for r in refs)
    return diff / max(scale, 1e-12) if math.isfinite(diff) else math.inf


def parity_checks(arch: str, device: str, size: tuple[int, int] = PARITY_SIZE) -> list[Check]:
    """Every parity check of one variant on ``device`` (on the CPU the CUDA-vs-CPU check is skipped)."""
    import torch

    from mmpvt.layers.attention import SpatialReductionAttention

    name = PARITY_ARCHS.get(arch, arch)
    theirs, ours = build_pair(arch)
    theirs.to(device)
    ours.to(device)
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1)).to(device)
    checks = []

    def record(what: str, rel: float, tol: float, detail: str = '') -> None:
        verdict = 'pass' if rel <= tol else 'fail'
        checks.append(Check('parity', f'{name} {what}', verdict, f'{rel:.1e} of scale (≤ {tol:g}){detail}'))

    with torch.no_grad(), no_tf32():
        ref, out = theirs(x), ours(x)
        record('fp32 vs mmdet, TF32 off', relative_diff(ref, out), TOL['fp32'])
        for dtype in ('fp16', 'bf16'):
            with torch.autocast(device, dtype=getattr(torch, {'fp16': 'float16', 'bf16': 'bfloat16'}[dtype])):
                ref_amp, out_amp = theirs(x), ours(x)
            context = f'; vs fp32: mmdet {relative_diff(ref, ref_amp):.1e}, mmpvt {relative_diff(ref, out_amp):.1e}'
            record(f'{dtype} autocast vs mmdet', relative_diff(ref_amp, out_amp), TOL[dtype], context)
        sras = [m for m in ours.modules() if isinstance(m, SpatialReductionAttention)]
        with torch.autocast(device, dtype=torch.float16):
            sdpa = ours(x)  # fused_attn=True: F.scaled_dot_product_attention
            for m in sras:
                m.fused_attn = False
            explicit = ours(x)
            for m in sras:
                m.fused_attn = True
        record('SRA SDPA vs explicit, fp16', relative_diff(explicit, sdpa), TOL['sdpa_fp16'])
        if device == 'cuda':
            cpu = copy.deepcopy(ours).cpu()
            record('CUDA vs CPU, fp32', relative_diff([o.cpu() for o in out], cpu(x.cpu())), TOL['cuda_cpu'])
        else:
            checks.append(Check('parity', f'{name} CUDA vs CPU, fp32', 'skip', 'no CUDA device'))
    return checks


class no_tf32:  # noqa: N801  (used as a context manager, like torch's)
    """TF32 off for matmuls and cuDNN convolutions inside the block."""

    def __enter__(self) -> None:
        import torch

        self.saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False

    def __exit__(self, *exc: object) -> None:
        import torch

        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = self.saved


def step_parity(ctx: Context) -> None:
    sys.path[:0] = ctx.env()['PYTHONPATH'].split(os.pathsep)
    for arch in PARITY_ARCHS:
        start = time.monotonic()
        try:
            checks = parity_checks(arch, ctx.device)
        except Exception as err:  # a crash is a failed check, reported with the others
            checks = [Check('parity', f'{PARITY_ARCHS[arch]}', 'fail', f'{type(err).__name__}: {err}'[:300])]
        for check in checks:
            ctx.add(check)
        print(f'[gpu-check] parity {arch}: {time.monotonic() - start:.0f} s', flush=True)


# ----------------------------------------------------------------------------- step: train
TRAIN_RUNS = (
    # name, config, toy data, --cfg-options for 50 iterations (an epoch: 400 images / batch 8), checkpoint,
    # needs CUDA ops
    (
        'RetinaNet-PVT-T',
        'configs/toy/retinanet_pvt_t_fpn_toy_coco.py',
        ('coco', 'data/toy_coco'),
        ['train_cfg.max_epochs=1', 'train_cfg.val_interval=1', 'default_hooks.checkpoint.interval=1'],
        'epoch_1.pth',
        True,
    ),
    (
        'Semantic FPN-PVT-T',
        'configs/toy/fpn_pvt_t_toy_ade.py',
        ('ade', 'data/toy_ade'),
        ['train_cfg.max_iters=50', 'train_cfg.val_interval=50', 'default_hooks.checkpoint.interval=50'],
        'iter_50.pth',
        False,
    ),
)


def loss_summary(work_dir: Path) -> dict[str, Any]:
    """Iterations, losses and non-finite gradient norms (skipped fp16 steps) from the Runner's scalars.json."""
    records = [
        json.loads(line)
        for log in sorted(work_dir.glob('*/vis_data/scalars.json'))
        for line in log.read_text().splitlines()
        if line.strip()
    ]
    train = [r for r in records if 'loss' in r]
    losses = [r['loss'] for r in train]
    skipped = [r['iter'] for r in train if 'grad_norm' in r and not math.isfinite(r['grad_norm']) and r['iter'] > 10]
    return dict(
        iters=max((r.get('iter', 0) for r in train), default=0),
        first=losses[0] if losses else None,
        last=losses[-1] if losses else None,
        finite=bool(losses) and all(math.isfinite(v) for v in losses),
        skipped_after_warmup=skipped,
    )


def test_metrics(stdout: str) -> dict[str, float]:
    """``key: number`` pairs of mmengine's ``Epoch(test)`` line."""
    lines = [line for line in stdout.splitlines() if 'Epoch(test)' in line]
    return {k: float(v) for k, v in re.findall(r'(\S+): (-?\d+(?:\.\d+)?)\b', lines[-1])} if lines else {}


def run_tool(ctx: Context, cmd: list[str], log: Path, cap: float) -> tuple[bool, str]:
    """Run a tool with a time box; (succeeded, its output). The output goes to ``log`` too."""
    timeout = min(cap, ctx.left() - 10)
    if timeout < 30:
        return False, 'no time left in this command'
    print('$ ' + ' '.join(cmd), flush=True)
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, env=ctx.env(), cwd=REPO, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        text = (err.stdout or b'').decode(errors='replace') if isinstance(err.stdout, bytes) else err.stdout or ''
        log.write_text(text[-(2**20) :])
        return False, f'timed out after {timeout:.0f} s'
    log.write_text((out.stdout + out.stderr)[-(2**20) :])
    return out.returncode == 0, out.stdout + out.stderr


def step_train(ctx: Context) -> None:
    import torch

    py = sys.executable
    ops = ctx.state().get('mmcv_ops')
    gpus = torch.cuda.device_count() if ctx.device == 'cuda' else 0
    for name, config, (kind, root), options, ckpt, needs_cuda_ops in TRAIN_RUNS:
        if needs_cuda_ops and ctx.device == 'cuda' and ops != 'cuda':
            ctx.add(Check('train', name, 'skip', f'mmcv has no CUDA ops ({ctx.state().get("mmcv_reason")})'))
            continue
        if not (REPO / root).exists():
            subprocess.run([py, 'tools/dataset_converters/make_toy_data.py', kind, root], env=ctx.env(), cwd=REPO)
        runs = [('', ['tools/train.py'], ['tools/test.py'])]
        if gpus >= 2:
            runs.append((' ×2 GPUs', ['tools/dist_train.sh'], ['tools/dist_test.sh']))
        for suffix, train_tool, test_tool in runs:
            work = ctx.out / 'train' / (config.split('/')[-1][:-3] + suffix.replace(' ', '_').replace('×', 'x'))
            shutil.rmtree(work, ignore_errors=True)
            work.parent.mkdir(parents=True, exist_ok=True)
            dist = bool(suffix)
            train = ['bash', *train_tool, config, '2'] if dist else [py, *train_tool, config]
            train += ['--amp', '--work-dir', str(work), '--cfg-options', *options]
            start = time.monotonic()
            ok, out = run_tool(ctx, train, work.with_suffix('.train.log'), cap=300)
            losses = loss_summary(work)
            checkpoint = work / ckpt
            metrics: dict[str, float] = {}
            if ok and checkpoint.exists():
                test = ['bash', *test_tool, config, str(checkpoint), '2'] if dist else [py, *test_tool, config]
                test += [] if dist else [str(checkpoint)]
                test += ['--work-dir', str(work / 'test')]
                ok, test_out = run_tool(ctx, test, work.with_suffix('.test.log'), cap=180)
                metrics = test_metrics(test_out)
                out = test_out if not ok else out
            passed = (
                ok
                and losses['finite']
                and losses['iters'] >= 50
                and bool(metrics)
                and not losses['skipped_after_warmup']
            )
            shown = ', '.join(f'{k}={v:g}' for k, v in metrics.items() if k.endswith(('mAP', 'mIoU', 'aAcc')))
            figure = (
                f'{losses["iters"]} its --amp, loss {losses["first"]} → {losses["last"]}, {shown or "no metrics"}, '
                f'{len(losses["skipped_after_warmup"])} skipped steps after warm-up, {time.monotonic() - start:.0f} s'
            )
            if not ok:
                figure += f'; {tail(out)}'
            ctx.add(Check('train', name + suffix, 'pass' if passed else 'fail', figure, detail=dict(losses, **metrics)))


# ----------------------------------------------------------------------------- step: bench
BENCH_ARCHS = {'small': 'PVT-S', 'b2': 'PVTv2-b2'}


def step_bench(ctx: Context) -> None:
    ops = ctx.state().get('mmcv_ops')
    for arch, name in BENCH_ARCHS.items():
        for amp in (None, 'fp16'):
            tasks = ['infer', 'train', 'memory'] + (['gemm'] if amp is None else [])
            if arch == 'small' and ops == 'cuda' and ctx.device == 'cuda':
                tasks.append('detector')
            label = f'{name} {amp or "fp32"}'
            result = ctx.out / f'bench_{arch}_{amp or "fp32"}.json'
            cmd = [sys.executable, 'tools/analysis/benchmark.py', '--device', ctx.device, '--arch', arch]
            cmd += ['--tasks', ','.join(tasks), '--infer-size', '800', '1333', '--json', str(result)]
            cmd += ['--amp', amp] if amp else []
            start = time.monotonic()
            ok, out = run_tool(ctx, cmd, result.with_suffix('.log'), cap=240)
            if not ok:
                ctx.add(Check('bench', label, 'fail', tail(out)))
                continue
            figures = bench_figures(json.loads(result.read_text()))
            seconds = f'{time.monotonic() - start:.0f} s'
            ctx.add(
                Check('bench', label, 'pass', '; '.join([*figures, seconds]), detail=json.loads(result.read_text()))
            )
    if ctx.device == 'cuda' and ops != 'cuda':
        ctx.add(Check('bench', 'RetinaNet-PVT-S predict', 'skip', 'mmcv has no CUDA ops (nms)'))


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
            figures.append(f'mmpvt {r["mmpvt_share"]:.0%} of the {r["gemm_gflops"] / 1e3:.1f} TFLOP/s fp32 GEMM')
    return figures


# ----------------------------------------------------------------------------- command line
STEP_PLANS = {
    'setup': (
        'install the wheels of {wheels} that this machine lacks (pip install --no-index --no-deps; its torch kept); '
        'build mmcv {mmcv} ops against its torch: CUDA (MMCV_WITH_OPS=1 FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=<this GPU>) '
        'if nvcc compiles a probe kernel, else CPU, time-boxed within {budget:.0f} s; import everything; '
        'write {out}/state.json'
    ),
    'parity': (
        'PVT-S and PVTv2-b2 against mmdet, same weights, 1×3×512×672 on the GPU: fp32 TF32 off (≤ 1e-5 of scale), '
        'fp16 (≤ 1e-2) and bf16 (≤ 5e-2) autocast, SRA SDPA vs explicit in fp16 (≤ 5e-3), CUDA vs CPU (≤ 1e-5)'
    ),
    'train': (
        '50 iterations --amp of configs/toy/retinanet_pvt_t_fpn_toy_coco.py (needs CUDA ops) and '
        'configs/toy/fpn_pvt_t_toy_ade.py through tools/train.py, then tools/test.py; with 2 GPUs also '
        'tools/dist_train.sh CONFIG 2 and tools/dist_test.sh'
    ),
    'bench': (
        'tools/analysis/benchmark.py --device cuda [--amp fp16] --arch small|b2: inference 1×3×800×1333, training '
        'step 2×3×512×512, peak memory of that step at 2×3×800×1333 with and without with_cp, against mmdet'
    ),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('step', choices=[*STEPS, 'all', 'wheels', 'report'])
    parser.add_argument('--dry-run', action='store_true', help='print the steps and what is missing, run nothing')
    parser.add_argument('--out', default=os.environ.get('GPU_CHECK_OUT', str(REPO / 'work_dirs' / 'gpu_check')))
    parser.add_argument('--wheels', default=os.environ.get('GPU_WHEELS', str(REPO / 'gpu_wheels')))
    parser.add_argument('--build-dir', default=str(REPO / 'build' / 'gpu_check'), help='mmcv sources, build tools')
    parser.add_argument('--budget', type=float, default=570.0, help='seconds per step (10-minute commands)')
    parser.add_argument('--device', default='cuda', choices=['cuda', 'cpu'], help='cpu: rehearsal, not a result')
    parser.add_argument('--python-version', default=TARGET_PYTHON, help='wheels: the target Python')
    parser.add_argument('--docs', default=None, help='report: write the table into this markdown file')
    args = parser.parse_args(argv)
    if args.budget <= 0:
        parser.error('--budget must be positive')
    return args


def dry_run(args: argparse.Namespace, steps: list[str]) -> int:
    fields = dict(wheels=args.wheels, mmcv=MMCV[1], budget=args.budget, out=args.out)
    for i, step in enumerate(steps, 1):
        print(f'{i}. {step}: {STEP_PLANS[step].format(**fields)}')
    print(f'results: {args.out}/report.json, report.md (table printed last); exit 0 only if every check passed')
    for problem in preconditions(args, steps):
        print(f'would stop: {problem}')
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.step == 'wheels':
        return make_wheels(Path(args.wheels), args.python_version)
    if args.step == 'report':
        report = json.loads((Path(args.out) / 'report.json').read_text())
        if args.docs:
            write_docs(Path(args.docs), report)
        print(render_report(report))
        return 0
    steps = list(STEPS) if args.step == 'all' else [args.step]
    if args.dry_run:
        return dry_run(args, steps)
    problems = preconditions(args, steps)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return PRECONDITION
    Path(args.out).mkdir(parents=True, exist_ok=True)
    ctx = Context(args)
    if 'setup' not in steps and not ctx.state().get('imports'):
        print(f'no setup on this machine ({ctx.state_path} missing or failed): run STEP=setup first', file=sys.stderr)
        return PRECONDITION
    for step in steps:
        ctx.deadline = time.monotonic() + args.budget
        start = time.monotonic()
        {'setup': step_setup, 'parity': step_parity, 'train': step_train, 'bench': step_bench}[step](ctx)
        print(f'[gpu-check] {step}: {time.monotonic() - start:.0f} s', flush=True)
        if step == 'setup' and not ctx.state().get('imports'):
            break
    report = json.loads((ctx.out / 'report.json').read_text()) if (ctx.out / 'report.json').exists() else {}
    print('\n' + render_report(report))
    return 1 if any(c.verdict == 'fail' for c in ctx.checks) else 0


if __name__ == '__main__':
    sys.exit(main())
