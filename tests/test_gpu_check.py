"""tools/analysis/gpu_check.py and its pieces (tools/analysis/gpucheck/) without a GPU: the plan and its
estimates, the report written after every check, honest verdicts and exit status, the offline install,
the mmcv stand-in, the nvcc probe, the background build, what the training checks read back, parity."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
import torch
from helpers import checkout_env

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO / 'tools' / 'analysis'
SCRIPT = TOOLS / 'gpu_check.py'
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason='this machine has a CUDA device')
sys.path.insert(0, str(TOOLS))

from gpucheck import build, plan, training, wheels  # noqa: E402
from gpucheck import report as rep  # noqa: E402


def load_cli():
    spec = importlib.util.spec_from_file_location('gpu_check_cli', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cli = load_cli()


def make_wheel(folder: Path, name: str, version: str, requires: tuple[str, ...] = (), code: str = '') -> Path:
    """A minimal pure-Python wheel: one module ``name`` and its dist-info."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f'{name}-{version}-py3-none-any.whl'
    info = f'{name}-{version}.dist-info'
    meta = f'Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n'
    meta += ''.join(f'Requires-Dist: {r}\n' for r in requires)
    files = {
        f'{name}.py': code or f'VALUE = {version!r}\n',
        f'{info}/METADATA': meta,
        f'{info}/WHEEL': 'Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n',
    }
    record = ''.join(f'{n},,\n' for n in files) + f'{info}/RECORD,,\n'
    with zipfile.ZipFile(path, 'w') as zf:
        for n, text in {**files, f'{info}/RECORD': record}.items():
            zf.writestr(n, text)
    return path


def run_script(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env or checkout_env(), timeout=timeout
    )


# --- the plan ------------------------------------------------------------------------------------


def test_dry_run_prints_one_plan_that_fits_nine_minutes(tmp_path: Path) -> None:
    out = run_script('--dry-run', '--wheels', str(tmp_path / 'none'), '--out', str(tmp_path / 'r'))
    assert out.returncode == 0, out.stderr
    stages = [line.split(' (')[0] for line in out.stdout.splitlines() if line[:1].isdigit()]
    assert stages == [f'{i}. {name}' for i, name in enumerate(plan.STAGE_NAMES, 1)]
    total = sum(s.estimate_s for s in plan.STAGES)
    assert total <= 540 and f'estimated {total} s of 540 s (fits)' in out.stdout
    # the checks that need no compiled mmcv op come before the ones that wait for the build
    assert (
        plan.STAGE_NAMES.index('parity-timm') < plan.STAGE_NAMES.index('mmcv-ops') < plan.STAGE_NAMES.index('retinanet')
    )
    assert 'FORCE_CUDA=1' in out.stdout and 'dist_train.sh CONFIG 1' in out.stdout and "timm's pvt_v2_b2" in out.stdout
    assert f'would stop: wheel folder {tmp_path / "none"} not found: make it with `make gpu-wheels`' in out.stdout
    if not torch.cuda.is_available():
        assert 'would stop: no CUDA device: ' in out.stdout
    assert not (tmp_path / 'r').exists()  # a dry run writes nothing


def test_a_budget_too_small_is_said_in_the_dry_run(tmp_path: Path) -> None:
    out = run_script('--dry-run', '--budget', '100', '--wheels', str(tmp_path))
    assert 'of 100 s (does NOT fit)' in out.stdout


def test_only_adds_what_a_stage_needs_and_refuses_unknown_names() -> None:
    assert [s.name for s in plan.select(['retinanet'])] == ['build', 'setup', 'mmcv-ops', 'retinanet']
    assert [s.name for s in plan.select(['bench', 'parity-timm'])] == ['setup', 'parity-timm', 'bench']
    assert [s.name for s in plan.select(None)] == list(plan.STAGE_NAMES)
    with pytest.raises(SystemExit) as err:
        cli.parse_args(['--only', 'parity,bench'])
    assert err.value.code == 2


@pytest.mark.parametrize('argv', [['nonsense'], ['--budget', '0'], ['--device', 'tpu']])
def test_arguments_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as err:
        cli.parse_args(argv)
    assert err.value.code == 2


def test_the_report_goes_to_gpu_check_out_else_to_the_device_tools_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv('OUT', '/device/out')
    monkeypatch.delenv('GPU_CHECK_OUT', raising=False)
    assert cli.parse_args([]).out == '/device/out'
    monkeypatch.setenv('GPU_CHECK_OUT', '/mine')
    assert cli.parse_args([]).out == '/mine'


# --- preconditions -------------------------------------------------------------------------------


@no_gpu
def test_without_a_cuda_device_it_stops_within_seconds(tmp_path: Path) -> None:
    start = time.monotonic()
    out = run_script('--out', str(tmp_path / 'r'), '--wheels', str(tmp_path))
    assert out.returncode == cli.PRECONDITION == 2
    assert out.stderr.startswith('error: no CUDA device: ')
    assert time.monotonic() - start < 30
    assert not (tmp_path / 'r').exists()


def test_no_cuda_device_in_process(monkeypatch: pytest.MonkeyPatch, capsys, tmp_path: Path) -> None:
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(torch.version, 'cuda', '13.0')  # a CUDA build whose driver or device is missing
    assert cli.main(['--out', str(tmp_path), '--wheels', str(tmp_path)]) == 2
    assert 'no CUDA device: torch.cuda.is_available() is False' in capsys.readouterr().err


def test_missing_wheel_folder_names_the_command(capsys, tmp_path: Path) -> None:
    assert cli.main(['--device', 'cpu', '--wheels', str(tmp_path / 'gone'), '--out', str(tmp_path)]) == 2
    assert 'make it with `make gpu-wheels`' in capsys.readouterr().err and not list(tmp_path.iterdir())


# --- the report and the verdicts -----------------------------------------------------------------

MACHINE = dict(gpu='NVIDIA H200 ×1', driver='580.1', cuda='13.0', nvcc='nvcc 13.0', torch='2.11.0', python='3.12.3')


def test_the_report_is_rewritten_after_every_check(tmp_path: Path) -> None:
    report = rep.Report(tmp_path, MACHINE, planned=['setup', 'parity-timm'])
    assert json.loads((tmp_path / 'report.json').read_text())['checks'] == {}  # there before the first check
    report.add(rep.Check('setup', 'imports', 'pass', 'mmdet 3.3.0'))
    data = json.loads((tmp_path / 'report.json').read_text())
    assert list(data['checks']) == ['setup: imports'] and data['exit_status'] == 1  # parity-timm not reached
    assert 'Not reached (the command ended first): parity-timm.' in (tmp_path / 'report.md').read_text()
    report.add(rep.Check('parity-timm', 'fp32 | TF32 off', 'pass', '3e-7 | of scale'))
    assert report.exit_status() == 0
    table = (tmp_path / 'report.md').read_text()
    assert table.startswith('GPU: NVIDIA H200 ×1 · driver 580.1 · CUDA 13.0 (torch), nvcc nvcc 13.0 · torch 2.11.0')
    assert '| parity-timm | fp32 / TF32 off | pass | 3e-7 / of scale | 0 |' in table  # a '|' cannot break the table
    assert '2 pass, 0 fail, 0 degraded, 0 not run; exit status 0' in table
    assert not list(tmp_path.glob('*.tmp'))


@pytest.mark.parametrize('verdict', ['fail', 'degraded', 'not run'])
def test_anything_but_pass_makes_the_exit_status_1(tmp_path: Path, verdict: str) -> None:
    report = rep.Report(tmp_path, MACHINE, planned=['mmcv-ops'])
    report.add(rep.Check('mmcv-ops', 'mmcv CUDA ops', verdict, 'why'))
    assert report.exit_status() == 1
    with pytest.raises(ValueError, match="verdict 'skip' is not one of pass, fail, degraded, not run"):
        rep.Check('x', 'y', 'skip', '')


def test_report_goes_into_the_docs_between_the_markers(tmp_path: Path) -> None:
    report = rep.Report(tmp_path, dict(MACHINE, rehearsal=True), planned=['bench'])
    report.add(rep.Check('bench', 'PVT-S fp32', 'pass', '1.5×'))
    docs = tmp_path / 'performance.md'
    docs.write_text(f'# Perf\n\n## GPU\nintro\n{rep.DOCS_BEGIN}\nnot yet\n{rep.DOCS_END}\nafter\n')
    rep.write_docs(docs, report.as_dict())
    text = docs.read_text()
    assert 'not yet' not in text and '| bench | PVT-S fp32 | pass | 1.5× | 0 |' in text
    assert text.startswith('# Perf\n\n## GPU\nintro\n') and text.endswith(f'{rep.DOCS_END}\nafter\n')
    assert 'not GPU results' in text
    (tmp_path / 'plain.md').write_text('no markers\n')
    with pytest.raises(SystemExit, match='no <!-- gpu-check:begin -->'):
        rep.write_docs(tmp_path / 'plain.md', report.as_dict())


def test_the_docs_have_the_markers() -> None:
    text = (REPO / 'docs' / 'performance.md').read_text()
    assert '## GPU' in text and rep.DOCS_BEGIN in text and rep.DOCS_END in text


# --- the wheel folder, the offline install and the stand-ins -------------------------------------


def test_offline_install_from_a_wheel_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """pip installs from the folder alone: no index is asked (an unreachable one is configured)."""
    wheel = make_wheel(tmp_path / 'wheels', 'gpucheck_tiny', '1.2.3')
    monkeypatch.setenv('PIP_INDEX_URL', 'http://127.0.0.1:9/simple')
    wheels.pip_install([wheel], target=tmp_path / 'target')
    code = 'import gpucheck_tiny, importlib.metadata as m; print(gpucheck_tiny.VALUE, m.version("gpucheck_tiny"))'
    env = {**os.environ, 'PYTHONPATH': str(tmp_path / 'target')}
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ['1.2.3', '1.2.3']


def test_a_broken_wheel_fails_the_install_loudly(tmp_path: Path) -> None:
    bad = tmp_path / 'broken-1.0-py3-none-any.whl'
    bad.write_bytes(b'not a zip')
    with pytest.raises(RuntimeError, match='pip install failed'):
        wheels.pip_install([bad], target=tmp_path / 'target')


def test_install_plan_keeps_the_machines_packages(tmp_path: Path) -> None:
    names = ['mmdet-3.3.0', 'mmengine-0.10.7', 'numpy-2.0.0', 'six-1.17.0', 'setuptools-69.5.1', 'wheel-0.48.0']
    files = [make_wheel(tmp_path, *n.split('-')) for n in names]
    machine = {'mmengine': '0.10.4', 'numpy': '2.3.0', 'mmdet': '3.3.0', 'setuptools': '80.0'}
    to_install, kept = wheels.plan_install(files, machine.get)
    assert [wheels.dist_of(f) for f in to_install] == [('mmengine', '0.10.7'), ('six', '1.17.0')]
    assert kept == ['mmdet 3.3.0', 'numpy 2.3.0']  # setuptools < 70 and wheel never go into the machine's env


def test_closure_check_finds_a_requirement_nobody_brings(tmp_path: Path) -> None:
    reqs = ('carried>=1', 'torch', 'numpy', "colorama; sys_platform == 'win32'", "extra_only; extra == 'all'")
    a = make_wheel(tmp_path, 'needy', '1.0', requires=(*reqs, 'Forgotten_Pkg'))
    b = make_wheel(tmp_path, 'carried', '1.0')
    assert wheels.missing_requirements([a, b]) == ['forgotten-pkg (needed by needy-1.0-py3-none-any.whl)']
    assert wheels.missing_requirements([b]) == []


def test_the_carried_list_pins_openmmlab_and_never_brings_torch() -> None:
    names = {wheels.canonical(spec.split('=')[0].split('<')[0]) for spec in wheels.CARRIED}
    assert {'mmengine==0.10.7', 'mmdet==3.3.0', 'mmsegmentation==1.2.2'} <= set(wheels.CARRIED)
    assert not names & {'torch', 'torchvision', 'opencv-python', 'scipy', 'numpy'}
    assert 'setuptools<70' in wheels.CARRIED


def test_the_downloaded_folder_is_complete_and_small() -> None:
    """Only where ``make gpu-wheels`` ran: every requirement is carried or assumed, under the budget."""
    folder = REPO / 'gpu_wheels'
    if not folder.is_dir():
        pytest.skip('no gpu_wheels/ here (make gpu-wheels)')
    files = sorted(folder.iterdir())
    assert wheels.missing_requirements(files) == []
    assert sum(f.stat().st_size for f in files) < wheels.BUDGET_MIB * 2**20
    assert any(f.name == 'mmcv-2.1.0.tar.gz' for f in files)
    assert not any(wheels.dist_of(f)[0] in {'torch', 'torchvision'} for f in files)


def test_scipy_stand_in_imports_and_raises_when_used(tmp_path: Path) -> None:
    root = wheels.write_stand_ins(tmp_path / 'stand_ins')
    code = textwrap.dedent(
        """
        from scipy.optimize import linear_sum_assignment
        from scipy.sparse.csgraph import maximum_bipartite_matching
        from scipy import interpolate
        import scipy
        assert type(interpolate).__name__ == 'module', interpolate
        print(scipy.__version__)
        linear_sum_assignment([[1]])
        """
    )
    out = subprocess.run(
        [sys.executable, '-c', code], capture_output=True, text=True, env={**os.environ, 'PYTHONPATH': str(root)}
    )
    assert out.stdout.strip() == '0+stand-in'
    assert (
        'ImportError: scipy is not installed here (gpu_check stand-in): scipy.optimize.linear_sum_assignment'
        in out.stderr
    )


def fake_sdist(path: Path) -> Path:
    """A tarball in the layout of mmcv's sdist: a Python package, compiled sources, setup.py."""
    with tarfile.open(path, 'w:gz') as tar:
        for name, text in {
            'mmcv-2.1.0/setup.py': '',
            'mmcv-2.1.0/mmcv/__init__.py': "__version__ = '2.1.0'\n",
            'mmcv-2.1.0/mmcv/ops/__init__.py': 'from .. import _ext\nnms = _ext.nms\n',
            'mmcv-2.1.0/mmcv/ops/csrc/pytorch/cuda/nms_cuda.cu': '// kernel\n',
        }.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_mmcv_lite_has_no_compiled_sources_and_an_ext_that_raises_when_called(tmp_path: Path) -> None:
    lite = wheels.write_mmcv_lite(fake_sdist(tmp_path / 'mmcv-2.1.0.tar.gz'), tmp_path / 'lite')
    assert not list(lite.rglob('*.cu')) and (lite / 'mmcv' / 'ops' / '__init__.py').is_file()
    code = textwrap.dedent(
        """
        import mmcv._ext as ext, mmcv.ops
        print(ext.STAND_IN, hasattr(ext, 'any_op_name'), ext.get_compiling_cuda_version())
        mmcv.ops.nms(1, 2)
        """
    )
    out = subprocess.run(
        [sys.executable, '-c', code], capture_output=True, text=True, env={**os.environ, 'PYTHONPATH': str(lite)}
    )
    assert out.stdout.split() == ['True', 'True', 'not', 'available']
    assert 'RuntimeError: mmcv op nms is not built on this machine' in out.stderr


def test_the_installed_mmcv_without_its_ops_imports_mmdet_and_reports_the_stand_in(tmp_path: Path) -> None:
    pytest.importorskip('mmcv')
    ctx = plan.Context(cli.parse_args(['--device', 'cpu', '--work', str(tmp_path), '--wheels', str(tmp_path)]))
    plan.write_lite(ctx, None)
    assert not list((tmp_path / 'mmcv-lite').rglob('_ext*.so'))
    assert build.mmcv_ops_flavour(ctx.env()) == ('stand-in', '')
    out = subprocess.run(
        [sys.executable, '-c', 'import mmdet.models, mmseg.models'], env=ctx.env(), capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr[-2000:]


# --- the nvcc probe and the background build -----------------------------------------------------


def fake_nvcc(folder: Path, script: str) -> dict[str, str]:
    """An environment whose CUDA_HOME is ``folder`` with a fake ``bin/nvcc`` running ``script``."""
    (folder / 'bin').mkdir(parents=True, exist_ok=True)
    nvcc = folder / 'bin' / 'nvcc'
    nvcc.write_text('#!/bin/sh\n' + script)
    nvcc.chmod(0o755)
    return {**checkout_env(), 'CUDA_HOME': str(folder), 'CUDA_PATH': ''}


PLANTED = (
    'case "$1" in --version) echo "Cuda compilation tools, release 13.0, V13.0.48";;\n'
    '*) echo "probe.cu(1): error: planted compiler failure" >&2; exit 1;; esac\n'
)


def test_failing_nvcc_fails_the_probe_with_the_compilers_first_error(tmp_path: Path) -> None:
    env = fake_nvcc(tmp_path / 'cuda', PLANTED)
    ok, why = build.probe_nvcc(env, None, '90', tmp_path / 'probe')
    assert not ok and why.startswith('nvcc 13.0 cannot compile for sm_90: ') and 'planted compiler failure' in why


def test_nvcc_of_another_cuda_major_is_refused(tmp_path: Path) -> None:
    env = fake_nvcc(tmp_path / 'cuda', 'echo "Cuda compilation tools, release 12.4, V12.4.131"\n')
    ok, why = build.probe_nvcc(env, '13.0', '90', tmp_path / 'probe')
    assert not ok and 'nvcc 12.4 but torch was built with CUDA 13.0' in why


def test_no_nvcc_is_said(tmp_path: Path) -> None:
    env = {'PATH': str(tmp_path), 'CUDA_HOME': ''}
    if Path('/usr/local/cuda/bin/nvcc').exists():
        pytest.skip('this machine has /usr/local/cuda')
    assert build.probe_nvcc(env, '13.0', '90', tmp_path) == (False, 'no nvcc: CUDA_HOME is unset and none is on PATH')


def test_real_nvcc_compiles_the_header_probe(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ('CUDA_HOME', 'CUDA_PATH')}
    if build.find_nvcc(env) is None or torch.version.cuda is None:
        pytest.skip('no nvcc or no CUDA torch on this machine')
    ok, why = build.probe_nvcc(env, torch.version.cuda, '90', tmp_path / 'probe')
    assert ok, why


SETUP_PY = """
from setuptools import Extension, setup
setup(name='gpucheck_ext', version='0.1', ext_modules=[Extension('gpucheck_ext', ['ext.c'])])
"""
EXT_C = """
#include <Python.h>
static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "gpucheck_ext", NULL, -1, NULL};
PyMODINIT_FUNC PyInit_gpucheck_ext(void) { return PyModule_Create(&def); }
"""


def tiny_source(folder: Path, setup_py: str = SETUP_PY) -> Path:
    folder.mkdir(parents=True)
    (folder / 'setup.py').write_text(setup_py)
    (folder / 'ext.c').write_text(EXT_C)
    return folder


def test_the_background_build_makes_a_wheel_and_a_failing_one_says_why(tmp_path: Path) -> None:
    job = build.BuildJob(tiny_source(tmp_path / 'ok'), tmp_path / 'dist', dict(os.environ), tmp_path / 'ok.log').start()
    result = job.wait(120)
    assert result is not None and result.ok and Path(result.wheel).name.startswith('gpucheck_ext-0.1-')
    env = dict(os.environ, CC='false', CXX='false', LDSHARED='false')
    job = build.BuildJob(tiny_source(tmp_path / 'bad'), tmp_path / 'dist2', env, tmp_path / 'bad.log').start()
    result = job.wait(120)
    assert result is not None and not result.ok and result.reason.startswith('exit 1: ')


def test_the_build_is_stopped_with_everything_it_started(tmp_path: Path) -> None:
    """ninja puts each compiler in a process group of its own: a child in a session of its own goes too."""
    pid_file = tmp_path / 'child.pid'
    slow = f"""import subprocess, time
child = subprocess.Popen(['sleep', '300'], start_new_session=True)
open({str(pid_file)!r}, 'w').write(str(child.pid))
print('[3/136] c++ -c ...', flush=True)
time.sleep(120)
"""
    job = build.BuildJob(
        tiny_source(tmp_path / 'slow', slow + SETUP_PY), tmp_path / 'dist', dict(os.environ), tmp_path / 'slow.log'
    )
    job.start()
    assert job.wait(3) is None and job.running()
    for _ in range(100):
        if pid_file.exists() and job.progress() == (3, 136):
            break
        time.sleep(0.1)
    result = job.stop('not finished in the time left')
    assert not result.ok and result.reason.startswith('not finished in the time left after ')
    assert result.reason.endswith(', 3 of 136 objects') and (result.done, result.total) == (3, 136)
    child = int(pid_file.read_text())
    time.sleep(0.5)
    state = Path(f'/proc/{child}/stat')
    assert not state.exists() or state.read_text().rsplit(')', 1)[1].split()[0] == 'Z', 'the grandchild survived'


def test_the_process_walk_counts_an_unreaped_child_only_when_asked() -> None:
    """kill_tree waits for the living descendants; the tests' helper also sees a child that exited unreaped."""
    parent = subprocess.Popen(
        [
            sys.executable,
            '-c',
            'import subprocess, time; c = subprocess.Popen(["sleep", "60"]); '
            'z = subprocess.Popen(["true"]); print(c.pid, z.pid, flush=True); time.sleep(60)',
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        living, exited = map(int, parent.stdout.readline().split())
        for _ in range(100):  # until ``true`` has exited and waits to be reaped
            if Path(f'/proc/{exited}/stat').read_text().rsplit(')', 1)[1].split()[0] == 'Z':
                break
            time.sleep(0.05)
        assert build.descendants(parent.pid) == [living]
        assert sorted(build.descendants(parent.pid, zombies=True)) == sorted([living, exited])
    finally:
        build.kill_tree(parent.pid)
        parent.wait()


# --- the whole command: a planted failed build, a kill midway ------------------------------------


def test_a_failed_cuda_build_is_degraded_and_exits_1(tmp_path: Path) -> None:
    """The probe's planted compiler failure: the command carries on, says why, and does not exit 0."""
    env = fake_nvcc(tmp_path / 'cuda', PLANTED)
    folders = ['--wheels', str(tmp_path), '--out', str(tmp_path / 'out'), '--work', str(tmp_path / 'work')]
    out = run_script('--device', 'cpu', '--build-cuda', '--only', 'mmcv-ops', *folders, env=env, timeout=170)
    assert out.returncode == 1, out.stdout[-3000:] + out.stderr[-3000:]
    checks = json.loads((tmp_path / 'out' / 'report.json').read_text())['checks']
    assert checks['setup: imports']['verdict'] == 'pass'
    ops = checks['mmcv-ops: mmcv CUDA ops']
    assert (
        ops['verdict'] == 'degraded' and 'probe failed' in ops['figure'] and 'planted compiler failure' in ops['figure']
    )
    assert '| mmcv-ops | mmcv CUDA ops | degraded |' in (tmp_path / 'out' / 'report.md').read_text()
    assert '2 pass, 0 fail, 1 degraded, 0 not run; exit status 1' in out.stdout  # setup's two checks passed


def test_a_command_killed_midway_leaves_the_report_of_the_checks_that_finished(tmp_path: Path) -> None:
    out_dir = tmp_path / 'out'
    env = {**checkout_env(), 'GPU_CHECK_OUT': str(out_dir)}
    cmd = [sys.executable, str(SCRIPT), '--device', 'cpu', '--only', 'parity-mmdet,train-amp,bench']
    cmd += ['--wheels', str(tmp_path), '--work', str(tmp_path / 'work')]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            path = out_dir / 'report.json'
            if path.exists() and any(k.startswith('parity-mmdet') for k in json.loads(path.read_text())['checks']):
                break
            assert proc.poll() is None, 'the command ended before it could be killed'
            time.sleep(0.5)
        else:
            pytest.fail('no parity check within 150 s')
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    data = json.loads((out_dir / 'report.json').read_text())
    assert data['checks']['setup: imports']['verdict'] == 'pass'
    assert [c['verdict'] for k, c in data['checks'].items() if k.startswith('parity-mmdet')] == ['pass'] * 6
    assert data['exit_status'] == 1 and 'bench' in rep.unreached(data)
    assert 'Not reached (the command ended first): ' in (out_dir / 'report.md').read_text()
    with tarfile.open(out_dir / 'logs.tar.gz') as tar:
        assert 'logs/parity_mmdet.log' in tar.getnames()


@pytest.mark.slow
def test_the_cpu_rehearsal_runs_the_whole_plan(tmp_path: Path) -> None:
    """Every stage on the CPU; only what the CPU cannot be is not a pass (timm is not installable here)."""
    start = time.monotonic()
    out = run_script('--device', 'cpu', '--wheels', str(tmp_path), '--out', str(tmp_path / 'out'),
                     '--work', str(tmp_path / 'work'), '--budget', '1500', timeout=1700)  # fmt: skip
    seconds = time.monotonic() - start
    print(out.stdout[-4000:], f'\nrehearsal: {seconds:.0f} s')
    data = json.loads((tmp_path / 'out' / 'report.json').read_text())
    assert rep.unreached(data) == []
    verdicts = {k: c['verdict'] for k, c in data['checks'].items()}
    assert verdicts.pop('mmcv-ops: mmcv CUDA ops') == 'degraded'  # a rehearsal is never a pass
    assert verdicts.pop('mmcv-ops: sigmoid_focal_loss') == 'not run'  # mmcv has no CPU kernel for it
    if importlib.util.find_spec('timm') is None:
        assert verdicts.pop('parity-timm: worker') == 'not run'
    # One iteration of RetinaNet on 8 images may detect nothing; the check must then say so, not pass.
    retinanet = data['checks']['retinanet: RetinaNet-PVT-T, 1 epochs']
    if verdicts.pop('retinanet: RetinaNet-PVT-T, 1 epochs') != 'pass':
        assert 'the model detected nothing in the test set' in retinanet['figure'], retinanet['figure']
    assert set(verdicts.values()) == {'pass'}, {
        k: data['checks'][k]['figure'] for k, v in verdicts.items() if v != 'pass'
    }
    assert out.returncode == 1


# --- what the training checks read back ----------------------------------------------------------


def test_loss_summary_sees_nan(tmp_path: Path) -> None:
    log = tmp_path / '20250101_000000' / 'vis_data' / 'scalars.json'
    log.parent.mkdir(parents=True)
    rows = [dict(iter=i, loss=1.0 / i) for i in range(10, 60, 10)]
    log.write_text('\n'.join(json.dumps(r) for r in rows) + '\n{"mIoU": 1.0, "step": 50}\n')
    assert training.loss_summary(tmp_path) == dict(iters=50, first=0.1, last=0.02, finite=True)
    rows[3]['loss'] = float('nan')
    log.write_text('\n'.join(json.dumps(r) for r in rows))  # json writes NaN, as the Runner's does
    assert training.loss_summary(tmp_path)['finite'] is False


@pytest.mark.parametrize(
    ('scale', 'tracker', 'expected'),
    [
        (65536.0, 50, dict(skipped=0, last_skip_iter=None)),
        (32768.0, 40, dict(skipped=1, last_skip_iter=10)),  # the last warm-up iteration: fine
        (16384.0, 39, dict(skipped=2, last_skip_iter=11)),  # one past it: late
    ],
)
def test_skipped_steps_come_from_the_loss_scaler(scale: float, tracker: int, expected: dict) -> None:
    state = dict(scale=scale, growth_factor=2.0, backoff_factor=0.5, growth_interval=2000, _growth_tracker=tracker)
    skips = training.skipped_steps(state, 50)
    assert {k: skips[k] for k in expected} == expected
    assert training.late_skip(skips) == (expected['skipped'] == 2)


def test_skipped_steps_refuse_what_they_cannot_count() -> None:
    assert 'no loss scaler' in training.skipped_steps({}, 50)['error']
    state = dict(scale=65536.0, growth_interval=2000, _growth_tracker=0)
    assert training.skipped_steps(state, 1999)['skipped'] == 0
    assert 'may have grown' in training.skipped_steps(state, 2000)['error']
    cpu = dict(scale=0.25, growth_interval=2000, _growth_tracker=48)  # CpuAmpOptimWrapper starts at 1
    assert training.skipped_steps(cpu, 50, init_scale=1.0)['skipped'] == 2


def test_test_metrics_come_from_the_epoch_test_line() -> None:
    out = (
        '11/25 13:00:00 - mmengine - INFO - Epoch(test) [13/13]    coco/bbox_mAP: 0.1230  coco/bbox_mAP_50: 0.4560  '
        'data_time: 0.0100  time: 0.2000\n'
    )
    metrics = training.test_metrics(out)
    assert metrics['coco/bbox_mAP'] == 0.123 and metrics['coco/bbox_mAP_50'] == 0.456
    assert training.test_metrics('no test line\n') == {}
    seg = '12/04 16:39:25 - mmengine - INFO - Iter(test) [13/13]    aAcc: 0.8800  mIoU: 0.3600  mAcc: 5.6900\n'
    assert training.test_metrics(seg)['mIoU'] == 0.36


def test_bench_figures() -> None:
    from gpucheck.bench import bench_figures

    results = {
        'machine': {},
        'infer_800x1333': dict(mmdet=0.030, mmpvt=0.020, speedup=1.5),
        'memory_2x800x1333': dict(mmdet_mib=9000.0, mmpvt_mib=5000.0, mmpvt_cp_mib=2000.0),
    }
    assert bench_figures(results) == [
        'infer_800x1333 30.0 → 20.0 ms (1.50×)',
        'memory_2x800x1333 peak 9000 → 5000 MiB, 2000 with_cp',
    ]


# --- parity, on the CPU (the code the GPU runs) --------------------------------------------------


def test_mmdet_parity_passes_for_the_same_weights() -> None:
    from gpucheck import parity

    pytest.importorskip('mmdet')
    checks = {c.name: c for c in parity.mmdet_checks('cpu', (64, 96), archs=('small',))}
    assert set(checks) == {
        'PVT-S vs mmdet, fp32 TF32 off',
        'PVT-S vs mmdet, fp16 autocast',
        'PVT-S vs mmdet, bf16 autocast',
    }
    assert all(c.verdict == 'pass' for c in checks.values()), {n: c.figure for n, c in checks.items()}


def test_mmdet_parity_fails_for_one_changed_weight(monkeypatch: pytest.MonkeyPatch) -> None:
    from gpucheck import parity

    pytest.importorskip('mmdet')
    build_pair = parity.build_mmdet_pair

    def changed(arch: str) -> tuple:
        theirs, ours = build_pair(arch)
        with torch.no_grad():
            ours.stages[3].blocks[2].mlp.fc2.bias[0] += 0.05
        return theirs, ours

    monkeypatch.setattr(parity, 'build_mmdet_pair', changed)
    checks = {c.name: c for c in parity.mmdet_checks('cpu', (64, 96), archs=('small',))}
    assert checks['PVT-S vs mmdet, fp32 TF32 off'].verdict == 'fail'


def test_self_checks_pass_on_the_cpu() -> None:
    from gpucheck import parity

    from mmpvt.models.pvt import PyramidVisionTransformer

    torch.manual_seed(0)
    model = PyramidVisionTransformer.from_arch('b0', drop_path_rate=0.0).eval()
    rec = parity.Recorder('parity-timm')
    parity.self_checks(rec, model, torch.randn(1, 3, 96, 128), 'cpu')
    names = [c.name for c in rec.checks]
    assert 'with_cp vs without, fp32 gradients' in names and not any('CUDA' in n for n in names)
    assert all(c.verdict == 'pass' for c in rec.checks), {c.name: c.figure for c in rec.checks}


def test_timm_outputs_are_read_through_either_timm_api() -> None:
    from gpucheck import parity

    class Stage(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + 1

    class Old(torch.nn.Module):  # timm < 1.0: (tokens, size) from the patch embedding, stages take the size
        stages = [lambda x, feat_size: (x * 2, feat_size)] * 2

        def patch_embed(self, x: torch.Tensor) -> tuple:
            return x, (1, 1)

    class New(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stages = torch.nn.ModuleList([Stage(), Stage()])

        def patch_embed(self, x: torch.Tensor) -> torch.Tensor:
            return x

    x = torch.ones(1)
    assert [t.item() for t in parity.timm_stage_outputs(Old(), x)] == [2.0, 4.0]
    assert [t.item() for t in parity.timm_stage_outputs(New(), x)] == [2.0, 3.0]
