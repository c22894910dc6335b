"""mmcv's CUDA ops on the GPU machine: a probe that fails early, then a build that runs in the background.

The probe compiles, before anything else, a header-only kernel that includes ``Python.h``, torch's
extension and CUDA headers and cuBLAS's, and one real mmcv source (``nms_cuda.cu``) with the flags of the
build: a missing header or an mmcv/torch/CUDA incompatibility shows in seconds, not minutes into the build.

The build (``pip wheel`` of the unpacked sdist, in-tree so that a stopped build resumes on a warm machine)
runs at a lower priority while the GPU checks use the device; :class:`BuildJob` reports its progress from
ninja's ``[k/N]`` lines and is killed with every compiler it started when time runs out.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import sysconfig
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from .wheels import MMCV

#: pip's own lines around a failed build: they say that it failed, not why.
PIP_NOISE = re.compile(r'This error originates|Failed (building wheel|to build)|subprocess-exited-with-error|^[×│╰]')
PROBE_HEADERS = """#include <Python.h>
#include <torch/extension.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <cublas_v2.h>
__global__ void twice(float *x) { x[threadIdx.x] *= 2.f; }
"""
#: The real mmcv source compiled by the probe: small, and on RetinaNet's path (CUDA NMS).
PROBE_SOURCE = 'mmcv/ops/csrc/pytorch/cuda/nms_cuda.cu'


def tail(text: str, lines: int = 3) -> str:
    """The lines that say what went wrong: the first error lines (a compiler's first error is the cause) and
    the last one, else the last lines."""
    rows = [r.strip() for r in text.splitlines() if r.strip() and not PIP_NOISE.search(r.strip())]
    errors = [r for r in rows if re.search(r'error|fatal|killed', r, re.I)]
    picked = list(dict.fromkeys(errors[: lines - 1] + errors[-1:])) if errors else rows[-lines:]
    return ' | '.join(picked)[:600]


def find_nvcc(env: dict[str, str]) -> str | None:
    """The nvcc that torch.utils.cpp_extension would use (CUDA_HOME, CUDA_PATH, PATH, /usr/local/cuda)."""
    for var in ('CUDA_HOME', 'CUDA_PATH'):
        if env.get(var):
            return str(Path(env[var]) / 'bin' / 'nvcc')
    found = shutil.which('nvcc', path=env.get('PATH', ''))
    return found or (str(p) if (p := Path('/usr/local/cuda/bin/nvcc')).exists() else None)


def unpack_sdist(sdist: Path, dest: Path) -> Path:
    """mmcv's sources under ``dest`` (kept: a second call on a warm machine resumes the build there)."""
    if not (dest / 'setup.py').is_file():
        scratch = dest.with_name(dest.name + '.unpack')
        shutil.rmtree(scratch, ignore_errors=True)
        with tarfile.open(sdist) as tf:
            tf.extractall(scratch, filter='data')
        shutil.rmtree(dest, ignore_errors=True)
        (scratch / f'{MMCV[0]}-{MMCV[1]}').rename(dest)
        shutil.rmtree(scratch, ignore_errors=True)
    return dest


def nvcc_flags(src: Path, arch: str, nvcc: str) -> list[str]:
    """The flags torch's BuildExtension gives mmcv's .cu files (include paths, defines, arch), for the probe.
    The CUDA headers are those of ``nvcc``'s toolkit (torch's CPU builds know of none)."""
    import torch
    from torch.utils import cpp_extension

    try:
        torch_includes = cpp_extension.include_paths(device_type='cuda')
    except Exception:  # a CPU torch has no CUDA_HOME; torch < 2.6 names the argument cuda=True
        try:
            torch_includes = cpp_extension.include_paths(cuda=True)  # type: ignore[call-arg]
        except Exception:
            torch_includes = cpp_extension.include_paths()
    toolkit = Path(nvcc).resolve().parent.parent / 'include'
    includes = [*torch_includes, str(toolkit), sysconfig.get_paths()['include']]
    includes += [str(src / 'mmcv/ops/csrc/pytorch'), str(src / 'mmcv/ops/csrc/common')]
    includes += [str(src / 'mmcv/ops/csrc/common/cuda')]
    abi = int(torch._C._GLIBCXX_USE_CXX11_ABI)
    flags = [f'-I{d}' for d in includes] + ['-DMMCV_WITH_CUDA', '-DTORCH_EXTENSION_NAME=_ext']
    flags += [f'-D_GLIBCXX_USE_CXX11_ABI={abi}', '-std=c++17', '--expt-relaxed-constexpr']
    flags += ['-D__CUDA_NO_HALF_OPERATORS__', '-D__CUDA_NO_HALF_CONVERSIONS__', '-D__CUDA_NO_HALF2_OPERATORS__']
    flags += ['-D__CUDA_NO_BFLOAT16_CONVERSIONS__', f'-gencode=arch=compute_{arch},code=sm_{arch}']
    return [*flags, '-Xcompiler', '-fPIC']


def probe_nvcc(
    env: dict[str, str], torch_cuda: str | None, arch: str, workdir: Path, src: Path | None = None
) -> tuple[bool, str]:
    """Does nvcc run, match torch's CUDA major version, and compile (in parallel) the header probe and, given
    mmcv's sources, one real mmcv kernel for ``arch`` (e.g. '90')?"""
    nvcc = find_nvcc(env)
    if not nvcc:
        return False, 'no nvcc: CUDA_HOME is unset and none is on PATH'
    try:
        out = subprocess.run([nvcc, '--version'], capture_output=True, text=True, env=env, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as err:
        return False, f'{nvcc} does not run: {err}'
    if out.returncode != 0:
        return False, f'`{nvcc} --version` failed ({out.returncode}): {tail(out.stdout + out.stderr)}'
    match = re.search(r'release (\d+)\.(\d+)', out.stdout)
    version = '.'.join(match.groups()) if match else 'unknown'
    if torch_cuda and match and match.group(1) != torch_cuda.split('.')[0]:
        return False, f'nvcc {version} but torch was built with CUDA {torch_cuda} (torch refuses another major)'
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / 'probe.cu').write_text(PROBE_HEADERS)
    jobs = {'headers': workdir / 'probe.cu'}
    if src is not None:
        jobs[PROBE_SOURCE.rsplit('/', 1)[1]] = src / PROBE_SOURCE
    flags = nvcc_flags(src or workdir, arch, nvcc)
    procs = {
        name: subprocess.Popen(
            [nvcc, '-c', str(path), '-o', str(workdir / f'{name}.o'), *flags],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        for name, path in jobs.items()
    }
    start, failures = time.monotonic(), []
    for name, proc in procs.items():
        try:
            text, _ = proc.communicate(timeout=max(1.0, 180 - (time.monotonic() - start)))
        except subprocess.TimeoutExpired:
            proc.kill()
            failures.append(f'{name}: no result within 180 s')
            continue
        if proc.returncode != 0:
            failures.append(f'{name}: {tail(text)}')
    seconds = time.monotonic() - start
    if failures:
        return False, f'nvcc {version} cannot compile for sm_{arch}: ' + '; '.join(failures)
    return True, f'nvcc {version} ({nvcc}) compiles {" and ".join(jobs)} for sm_{arch} in {seconds:.0f} s'


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


def descendants(pid: int, *, zombies: bool = False) -> list[int]:
    """Every descendant of ``pid``, from /proc: the living ones, and the exited but unreaped ones with ``zombies``."""
    children: dict[int, list[int]] = {}
    for stat in Path('/proc').glob('[0-9]*/stat'):
        try:
            state, ppid = stat.read_text().rsplit(')', 1)[1].split()[:2]
        except OSError:
            continue
        if zombies or state != 'Z':
            children.setdefault(int(ppid), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


@dataclass
class Build:
    """The outcome of a build: ``ok`` with its wheel, or the reason it has none."""

    ok: bool
    seconds: float
    reason: str = ''
    wheel: str = ''
    done: int = 0
    total: int = 0


class BuildJob:
    """``pip wheel`` of a source tree in the background (lower priority), with its log and progress."""

    def __init__(self, src: Path, dist: Path, env: dict[str, str], log: Path, *, nice: int = 10) -> None:
        self.src, self.dist, self.env, self.log, self.nice = src, dist, env, log, nice
        self.proc: subprocess.Popen | None = None
        self.started = 0.0
        self.ended: float | None = None

    def start(self) -> BuildJob:
        cmd = ['nice', '-n', str(self.nice)] if self.nice and shutil.which('nice') else []
        cmd += [sys.executable, '-m', 'pip', '--disable-pip-version-check', 'wheel', '-v', '--no-index', '--no-deps']
        cmd += ['--no-build-isolation', '-w', str(self.dist), str(self.src)]
        self.dist.mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, 'w') as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
            )
        self.started = time.monotonic()
        return self

    def progress(self) -> tuple[int, int]:
        """(objects compiled, objects in all) from ninja's last ``[k/N]`` line; (0, 0) before the first."""
        try:
            text = self.log.read_text(errors='replace')[-200_000:]
        except OSError:
            return 0, 0
        found = re.findall(r'^\s*\[(\d+)/(\d+)\]', text, re.M)  # pip -v indents the build's lines
        return (int(found[-1][0]), int(found[-1][1])) if found else (0, 0)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait(self, timeout: float) -> Build | None:
        """The result once the build ends within ``timeout`` seconds, else None (it keeps running)."""
        assert self.proc is not None
        try:
            self.proc.wait(timeout=max(timeout, 0.1))
        except subprocess.TimeoutExpired:
            return None
        return self.result()

    def stop(self, why: str) -> Build:
        """Kill the build and everything it started; the result says how far it got."""
        if self.running():
            kill_tree(self.proc.pid)
            self.proc.wait()
        done, total = self.progress()
        seconds = time.monotonic() - self.started
        return Build(False, seconds, f'{why} after {seconds:.0f} s, {done} of {total or "?"} objects', '', done, total)

    def result(self) -> Build:
        assert self.proc is not None and self.proc.returncode is not None
        self.ended = self.ended or time.monotonic()
        seconds = self.ended - self.started
        done, total = self.progress()
        wheels = sorted(self.dist.glob('*.whl'), key=lambda p: p.stat().st_mtime)
        if self.proc.returncode != 0 or not wheels:
            reason = f'exit {self.proc.returncode}: {tail(self.log.read_text(errors="replace"))}'
            return Build(False, seconds, reason, '', done, total)
        return Build(True, seconds, '', str(wheels[-1]), done, total)


def trim_log(path: Path, keep: int = 2**20) -> None:
    """Keep the last MiB of a build log (files that come back must stay small)."""
    if path.exists() and path.stat().st_size > keep:
        data = path.read_bytes()[-keep:]
        path.write_bytes(b'[... earlier output cut ...]\n' + data)


def mmcv_ops_flavour(env: dict[str, str] | None = None) -> tuple[str | None, str]:
    """('cuda', 'cpu' or 'stand-in', '') for the mmcv that ``env`` imports; (None, why) without compiled ops."""
    code = (  # torch first: the compiled ops link against its libraries
        'import torch, mmcv, mmcv._ext as e; from mmcv.ops import get_compiling_cuda_version as v; '
        "print('stand-in' if getattr(e, 'STAND_IN', False) else v())"
    )
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        return None, tail(out.stderr) or f'exit {out.returncode}'
    text = out.stdout.strip()
    return ('stand-in' if text.endswith('stand-in') else 'cpu' if 'not available' in text else 'cuda'), ''
