"""What travels to the offline GPU machine, and how it is installed there.

Here, with PyPI (``make gpu-wheels``): ``pip download --no-deps`` of an explicit list (:data:`CARRIED`) for
CPython 3.12 manylinux x86-64, plus mmcv 2.1.0's sdist, into ``gpu_wheels/``; every requirement of every
file must be carried, assumed on the image (:data:`ASSUMED`) or stood in for (:data:`STAND_INS`).

There: the wheels the machine lacks are installed with ``pip install --no-index --no-deps`` (its torch
stays), and a folder for every subprocess's ``PYTHONPATH`` holds what it cannot get whole: a ``scipy`` whose
functions raise, ``pkg_resources`` from the carried setuptools, and, until mmcv's CUDA ops are built, mmcv's
Python package with an ``mmcv._ext`` stand-in (:func:`write_mmcv_lite`) so that mmdet and mmseg import.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

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
    'scipy': 'its wheel is 35 MiB, over half the budget; where the image lacks it, a stand-in whose functions '
    'raise when called goes on PYTHONPATH (mmdet/mmseg only import them at module level)',
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
    cmd += ['--no-compile', '--force-reinstall'] if force else ['--no-compile']
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


def with_path(*dirs: Path | str, env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: this process's) with ``dirs`` first on PYTHONPATH."""
    env = dict(os.environ if env is None else env)
    env['PYTHONPATH'] = os.pathsep.join([*map(str, dirs), *filter(None, [env.get('PYTHONPATH')])])
    return env


def importable(module: str, env: dict[str, str] | None = None) -> bool:
    return subprocess.run([sys.executable, '-c', f'import {module}'], capture_output=True, env=env).returncode == 0


# ----------------------------------------------------------------------------- stand-ins
RAISING_GETATTR = (
    '\n\ndef __getattr__(name):\n'
    "    if name.startswith('__'):\n"
    '        raise AttributeError(name)\n\n'
    '    def missing(*args, **kwargs):\n'
    '        raise {error}(f{message!r})\n\n'
    '    return missing\n'
)


def write_stand_ins(dest: Path) -> Path:
    """A ``scipy`` whose every function raises when called, so mmdet and mmseg import without it."""
    doc = '"""Stand-in written by tools/analysis/gpucheck: scipy is not on this machine."""\n'
    getattr_ = RAISING_GETATTR.format(
        error='ImportError', message='scipy is not installed here (gpu_check stand-in): {__name__}.{name}'
    )
    for module in ('', *STAND_IN_MODULES):
        path = dest / 'scipy' / module / '__init__.py'
        path.parent.mkdir(parents=True, exist_ok=True)
        # The package itself has no __getattr__: ``from scipy import interpolate`` must find the submodule.
        path.write_text(doc + (getattr_ if module else "__version__ = '0+stand-in'\n"))
    return dest


#: What the ``mmcv._ext`` stand-in answers without raising: version queries that environment reports call.
EXT_STAND_IN = '''"""Stand-in for mmcv's compiled ops, written by tools/analysis/gpucheck.

mmcv's Python package is importable without its ops, but ``mmcv.ops`` (which mmdet and mmseg import at
module level) asks ``mmcv._ext`` for every op's name. Here each name exists and raises when called, so a
check that reaches a compiled op fails loudly instead of running something else.
"""

STAND_IN = True


def get_compiler_version():
    return 'none (gpu_check stand-in: mmcv ops not built)'


def get_compiling_cuda_version():
    return 'not available'
'''


def write_mmcv_lite(sdist: Path, dest: Path) -> Path:
    """mmcv's Python package from its sdist (no compiled sources) with the ``_ext`` stand-in, under ``dest``.

    Returns:
        The folder to put first on PYTHONPATH (it holds ``mmcv/``).
    """
    package = dest / 'mmcv'
    if not (package / '_ext.py').is_file():
        shutil.rmtree(dest, ignore_errors=True)
        with tarfile.open(sdist) as tf:
            top = f'{MMCV[0]}-{MMCV[1]}/mmcv/'
            members = [m for m in tf.getmembers() if m.name.startswith(top) and '/csrc/' not in m.name]
            for m in members:
                m.name = m.name[len(top) - len('mmcv/') :]
            tf.extractall(dest, members=members, filter='data')
        write_ext_stand_in(package)
    return dest


def write_ext_stand_in(package: Path) -> None:
    """``package/_ext.py``: the stand-in for mmcv's compiled ops (:data:`EXT_STAND_IN`)."""
    ext = EXT_STAND_IN + RAISING_GETATTR.format(
        error='RuntimeError',
        message='mmcv op {name} is not built on this machine (gpu_check runs mmcv without compiled ops '
        'until its CUDA build finishes)',
    )
    (package / '_ext.py').write_text(ext)


def copy_pkg_resources(wheels: Path, build: Path, dest: Path) -> None:
    """``pkg_resources`` (setuptools >= 81 dropped it; mmengine 0.10.7 imports it for ``mmdet::`` configs)
    copied from the carried setuptools 69 into ``dest``."""
    tools = install_buildtools(wheels, build / 'buildtools')
    shutil.rmtree(dest / 'pkg_resources', ignore_errors=True)
    shutil.copytree(tools / 'pkg_resources', dest / 'pkg_resources')
