"""tools/analysis/gpu_check.py without a GPU: arguments, report, dry run, the no-GPU exit, the offline
install from a wheel folder, the closure check of that folder and the fallback of the mmcv build."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import textwrap
import time
import zipfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / 'tools' / 'analysis' / 'gpu_check.py'
no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason='this machine has a CUDA device')


def load_gpu_check():
    spec = importlib.util.spec_from_file_location('gpu_check', SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules['gpu_check'] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


gc = load_gpu_check()


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


# --- arguments -----------------------------------------------------------------------------------


def test_arguments_defaults_and_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv('GPU_CHECK_OUT', str(tmp_path / 'results'))
    args = gc.parse_args(['parity'])
    assert (args.step, args.device, args.budget, args.dry_run) == ('parity', 'cuda', 570.0, False)
    assert args.out == str(tmp_path / 'results')
    assert Path(args.wheels) == REPO / 'gpu_wheels'
    assert gc.parse_args(['all', '--dry-run', '--device', 'cpu']).dry_run


@pytest.mark.parametrize('argv', [[], ['nonsense'], ['setup', '--budget', '0'], ['bench', '--device', 'tpu']])
def test_arguments_refused(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as err:
        gc.parse_args(argv)
    assert err.value.code == 2


# --- report --------------------------------------------------------------------------------------

MACHINE = dict(gpu='NVIDIA H100 ×1', driver='580.1', cuda='13.0', nvcc='nvcc 13.0', torch='2.11.0', python='3.12.3')


def test_report_merges_checks_and_renders_a_table(tmp_path: Path) -> None:
    gc.update_report(tmp_path, [gc.Check('setup', 'mmcv ops', 'pass', 'CUDA ops built in 300 s')], MACHINE)
    gc.update_report(tmp_path, [gc.Check('parity', 'PVT-S fp32', 'fail', '3e-4 | of scale')], MACHINE)
    report = gc.update_report(tmp_path, [gc.Check('setup', 'mmcv ops', 'skip', 'again')], MACHINE)
    assert list(report['checks']) == ['setup: mmcv ops', 'parity: PVT-S fp32']  # merged by step and name
    assert json.loads((tmp_path / 'report.json').read_text())['checks']['setup: mmcv ops']['verdict'] == 'skip'
    table = (tmp_path / 'report.md').read_text()
    assert table.startswith('GPU: NVIDIA H100 ×1 · driver 580.1 · CUDA 13.0 (torch), nvcc nvcc 13.0 · torch 2.11.0')
    assert '| parity | PVT-S fp32 | fail | 3e-4 / of scale |' in table  # a '|' in a figure cannot break the table
    assert 'Rehearsal' not in table


def test_report_goes_into_the_docs_between_the_markers(tmp_path: Path) -> None:
    report = gc.update_report(
        tmp_path, [gc.Check('bench', 'PVT-S fp32', 'pass', '1.5×')], dict(MACHINE, rehearsal=True)
    )
    docs = tmp_path / 'performance.md'
    docs.write_text(f'# Perf\n\n## GPU\nintro\n{gc.DOCS_BEGIN}\nnot yet\n{gc.DOCS_END}\nafter\n')
    gc.write_docs(docs, report)
    text = docs.read_text()
    assert 'not yet' not in text and '| bench | PVT-S fp32 | pass | 1.5× |' in text
    assert text.startswith('# Perf\n\n## GPU\nintro\n') and text.endswith(f'{gc.DOCS_END}\nafter\n')
    assert 'not GPU results' in text
    (tmp_path / 'plain.md').write_text('no markers\n')
    with pytest.raises(SystemExit, match='no <!-- gpu-check:begin -->'):
        gc.write_docs(tmp_path / 'plain.md', report)


def test_the_docs_have_the_markers() -> None:
    text = (REPO / 'docs' / 'performance.md').read_text()
    assert '## GPU' in text and gc.DOCS_BEGIN in text and gc.DOCS_END in text


# --- dry run and the missing preconditions -------------------------------------------------------


def run_script(*args: str, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, float]:
    start = time.monotonic()
    out = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=120)
    return out, time.monotonic() - start


def test_dry_run_prints_every_step_and_what_is_missing(tmp_path: Path) -> None:
    out, _ = run_script('all', '--dry-run', '--wheels', str(tmp_path / 'none'), '--out', str(tmp_path / 'r'))
    assert out.returncode == 0, out.stderr
    steps = [line.split(':')[0] for line in out.stdout.splitlines() if line[:1].isdigit()]
    assert steps == ['1. setup', '2. parity', '3. train', '4. bench']
    assert 'FORCE_CUDA=1' in out.stdout and 'dist_train.sh CONFIG 2' in out.stdout
    assert f'would stop: wheel folder {tmp_path / "none"} not found: make it with `make gpu-wheels`' in out.stdout
    if not torch.cuda.is_available():
        assert 'would stop: no CUDA device: ' in out.stdout
    assert not (tmp_path / 'r').exists()  # a dry run writes nothing


@no_gpu
def test_without_a_cuda_device_it_stops_within_seconds(tmp_path: Path) -> None:
    out, seconds = run_script('parity', '--out', str(tmp_path))
    assert out.returncode == gc.PRECONDITION == 2
    assert out.stderr.startswith('no CUDA device: ')
    assert seconds < 30, seconds
    assert not list(tmp_path.iterdir())


def test_no_cuda_device_in_process(monkeypatch: pytest.MonkeyPatch, capsys, tmp_path: Path) -> None:
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)
    monkeypatch.setattr(torch.version, 'cuda', '13.0')  # a CUDA build whose driver or device is missing
    assert gc.main(['bench', '--out', str(tmp_path)]) == 2
    assert capsys.readouterr().err.startswith('no CUDA device: torch.cuda.is_available() is False')


def test_missing_wheel_folder_names_the_command(capsys, tmp_path: Path) -> None:
    assert gc.main(['setup', '--device', 'cpu', '--wheels', str(tmp_path / 'gone'), '--out', str(tmp_path)]) == 2
    assert 'make it with `make gpu-wheels`' in capsys.readouterr().err


def test_later_steps_need_the_setup(capsys, tmp_path: Path) -> None:
    assert gc.main(['train', '--device', 'cpu', '--out', str(tmp_path)]) == 2
    assert 'run STEP=setup first' in capsys.readouterr().err


# --- the wheel folder and the offline install ----------------------------------------------------


def test_offline_install_from_a_wheel_folder(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """pip installs from the folder alone: no index is asked (an unreachable one is configured)."""
    wheel = make_wheel(tmp_path / 'wheels', 'gpucheck_tiny', '1.2.3')
    monkeypatch.setenv('PIP_INDEX_URL', 'http://127.0.0.1:9/simple')
    start = time.monotonic()
    gc.pip_install([wheel], target=tmp_path / 'target')
    assert time.monotonic() - start < 60
    code = 'import gpucheck_tiny, importlib.metadata as m; print(gpucheck_tiny.VALUE, m.version("gpucheck_tiny"))'
    env = {**os.environ, 'PYTHONPATH': str(tmp_path / 'target')}
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.split() == ['1.2.3', '1.2.3']


def test_a_broken_wheel_fails_the_install_loudly(tmp_path: Path) -> None:
    bad = tmp_path / 'broken-1.0-py3-none-any.whl'
    bad.write_bytes(b'not a zip')
    with pytest.raises(RuntimeError, match='pip install failed'):
        gc.pip_install([bad], target=tmp_path / 'target')


def test_install_plan_keeps_the_machines_packages(tmp_path: Path) -> None:
    names = ['mmdet-3.3.0', 'mmengine-0.10.7', 'numpy-2.0.0', 'six-1.17.0', 'setuptools-69.5.1', 'wheel-0.48.0']
    files = [make_wheel(tmp_path, *n.split('-')) for n in names]
    machine = {'mmengine': '0.10.4', 'numpy': '2.3.0', 'mmdet': '3.3.0', 'setuptools': '80.0'}
    to_install, kept = gc.plan_install(files, machine.get)
    assert [gc.dist_of(f) for f in to_install] == [('mmengine', '0.10.7'), ('six', '1.17.0')]
    assert kept == ['mmdet 3.3.0', 'numpy 2.3.0']  # setuptools < 70 and wheel never go into the machine's env


def test_closure_check_finds_a_requirement_nobody_brings(tmp_path: Path) -> None:
    reqs = ('carried>=1', 'torch', 'numpy', "colorama; sys_platform == 'win32'", "extra_only; extra == 'all'")
    a = make_wheel(tmp_path, 'needy', '1.0', requires=(*reqs, 'Forgotten_Pkg'))
    b = make_wheel(tmp_path, 'carried', '1.0')
    assert gc.missing_requirements([a, b]) == ['forgotten-pkg (needed by needy-1.0-py3-none-any.whl)']
    assert gc.missing_requirements([b]) == []


def test_the_carried_list_pins_openmmlab_and_never_brings_torch() -> None:
    names = {gc.canonical(spec.split('=')[0].split('<')[0]) for spec in gc.CARRIED}
    assert {'mmengine==0.10.7', 'mmdet==3.3.0', 'mmsegmentation==1.2.2'} <= set(gc.CARRIED)
    assert not names & {'torch', 'torchvision', 'opencv-python', 'scipy', 'numpy'}
    assert 'setuptools<70' in gc.CARRIED


def test_the_downloaded_folder_is_complete_and_small() -> None:
    """Only where ``make gpu-wheels`` ran: every requirement is carried or assumed, under the budget."""
    folder = REPO / 'gpu_wheels'
    if not folder.is_dir():
        pytest.skip('no gpu_wheels/ here (make gpu-wheels)')
    files = sorted(folder.iterdir())
    assert gc.missing_requirements(files) == []
    assert sum(f.stat().st_size for f in files) < gc.BUDGET_MIB * 2**20
    assert any(f.name == 'mmcv-2.1.0.tar.gz' for f in files)
    assert not any(gc.dist_of(f)[0] in {'torch', 'torchvision'} for f in files)


def test_scipy_stand_in_imports_and_raises_when_used(tmp_path: Path) -> None:
    root = gc.write_stand_ins(tmp_path / 'stand_ins')
    code = textwrap.dedent(
        """
        from scipy.optimize import linear_sum_assignment
        from scipy.ndimage import gaussian_filter
        from scipy.sparse.csgraph import maximum_bipartite_matching
        from scipy import interpolate
        import scipy
        assert type(interpolate).__name__ == 'module', interpolate
        print(scipy.__version__)
        linear_sum_assignment([[1]])
        """
    )
    env = {**os.environ, 'PYTHONPATH': str(root)}
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == '0+stand-in'
    assert 'ImportError: scipy is not installed here (gpu_check stand-in): scipy.optimize.linear_sum_assignment' in (
        out.stderr
    )


# --- the mmcv build: probe, failure, time box and fallback ---------------------------------------


def fake_nvcc(folder: Path, script: str) -> dict[str, str]:
    """An environment whose PATH starts with a fake ``nvcc`` running ``script`` (no CUDA_HOME)."""
    folder.mkdir(parents=True, exist_ok=True)
    nvcc = folder / 'nvcc'
    nvcc.write_text('#!/bin/sh\n' + script)
    nvcc.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ('CUDA_HOME', 'CUDA_PATH')}
    env['PATH'] = f'{folder}{os.pathsep}{env["PATH"]}'
    return env


def test_failing_nvcc_makes_the_build_fall_back_to_cpu_ops(tmp_path: Path) -> None:
    env = fake_nvcc(tmp_path / 'bin', 'echo "nvcc fatal   : fake compiler failure" >&2\nexit 1\n')
    calls = []

    def builder(flavour: str, timeout: float) -> gc.Build:
        calls.append((flavour, timeout))
        return gc.Build(flavour, True, 1.0, wheel='mmcv.whl')

    result = gc.build_ops(
        cuda_device=True,
        probe=lambda: gc.probe_nvcc(env, '13.0', '90', tmp_path / 'probe'),
        builder=builder,
        deadline=time.monotonic() + 500,
        cpu_reserve=100,
    )
    assert result['ops'] == 'cpu'
    assert [flavour for flavour, _ in calls] == ['cpu']  # no CUDA build was tried
    assert result['reason'].startswith('nvcc probe failed: ') and 'fake compiler failure' in result['reason']


def test_nvcc_of_another_cuda_major_is_refused(tmp_path: Path) -> None:
    env = fake_nvcc(tmp_path / 'bin', 'echo "Cuda compilation tools, release 12.4, V12.4.131"\n')
    ok, why = gc.probe_nvcc(env, '13.0', '90', tmp_path / 'probe')
    assert not ok and 'nvcc 12.4 but torch was built with CUDA 13.0' in why


def test_real_nvcc_compiles_the_probe_kernel(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ('CUDA_HOME', 'CUDA_PATH')}
    if gc.find_nvcc(env) is None:
        pytest.skip('no nvcc on this machine')
    ok, why = gc.probe_nvcc(env, None, '90', tmp_path / 'probe')
    assert ok, why
    assert (tmp_path / 'probe' / 'probe.o').stat().st_size > 0


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


def test_failing_compiler_makes_the_build_fall_back_to_cpu_ops(tmp_path: Path) -> None:
    """The 'CUDA' attempt gets a compiler that fails (CC=false), the CPU attempt the real one."""

    def builder(flavour: str, timeout: float) -> gc.Build:
        env = dict(os.environ, CC='false', CXX='false', LDSHARED='false') if flavour == 'cuda' else dict(os.environ)
        src = tiny_source(tmp_path / flavour)
        return gc.run_build(src, tmp_path / f'dist-{flavour}', env, timeout, tmp_path / f'{flavour}.log', flavour)

    result = gc.build_ops(
        cuda_device=True,
        probe=lambda: (True, 'fake nvcc ok'),
        builder=builder,
        deadline=time.monotonic() + 400,
        cpu_reserve=100,
    )
    cuda, cpu = result['attempts']
    assert (cuda['flavour'], cuda['ok'], cpu['flavour'], cpu['ok']) == ('cuda', False, 'cpu', True)
    assert result['ops'] == 'cpu'
    assert result['reason'].startswith('CUDA build failed: exit 1: ') and 'false' in result['reason']
    assert Path(cpu['wheel']).name.startswith('gpucheck_ext-0.1-')


def test_no_ops_at_all_is_reported(tmp_path: Path) -> None:
    def builder(flavour: str, timeout: float) -> gc.Build:
        return gc.Build(flavour, False, 2.0, reason='exit 1: error: command false failed')

    result = gc.build_ops(
        cuda_device=False, probe=lambda: (True, ''), builder=builder, deadline=time.monotonic() + 100, cpu_reserve=50
    )
    assert result['ops'] is None
    assert result['reason'] == 'no CUDA device; CPU build failed too: exit 1: error: command false failed'


def test_the_build_is_time_boxed(tmp_path: Path) -> None:
    """A build past its time is killed with everything it started, even a child in a session of its own
    (ninja puts each compiler in a process group of its own)."""
    pid_file = tmp_path / 'child.pid'
    slow = f"""import subprocess, time
child = subprocess.Popen(['sleep', '300'], start_new_session=True)
open({str(pid_file)!r}, 'w').write(str(child.pid))
time.sleep(120)
"""
    src = tiny_source(tmp_path / 'slow', slow + SETUP_PY)
    start = time.monotonic()
    build = gc.run_build(src, tmp_path / 'dist', dict(os.environ), 6, tmp_path / 'slow.log', 'cuda')
    assert time.monotonic() - start < 30
    assert (build.ok, build.reason) == (False, 'timed out after 6 s')
    child = int(pid_file.read_text())
    time.sleep(0.5)
    state = Path(f'/proc/{child}/stat')
    assert not state.exists() or state.read_text().rsplit(')', 1)[1].split()[0] == 'Z', 'the grandchild survived'


def test_cpu_ops_already_there_are_kept_when_cuda_fails() -> None:
    result = gc.build_ops(
        cuda_device=True,
        probe=lambda: (False, 'no nvcc'),
        builder=lambda flavour, timeout: pytest.fail('nothing should be built'),
        deadline=time.monotonic() + 100,
        cpu_reserve=50,
        have_cpu_ops=True,
    )
    assert (result['ops'], result['reason'], result['kept']) == ('cpu', 'nvcc probe failed: no nvcc', True)


# --- what the steps read back --------------------------------------------------------------------


def test_loss_summary_sees_nan_and_skipped_steps(tmp_path: Path) -> None:
    log = tmp_path / '20250101_000000' / 'vis_data' / 'scalars.json'
    log.parent.mkdir(parents=True)
    rows = [dict(iter=i, loss=1.0 / i, grad_norm=2.0) for i in range(10, 60, 10)]
    log.write_text('\n'.join(json.dumps(r) for r in rows) + '\n{"coco/bbox_mAP": 0.1, "step": 1}\n')
    assert gc.loss_summary(tmp_path) == dict(iters=50, first=0.1, last=0.02, finite=True, skipped_after_warmup=[])
    rows[2]['grad_norm'] = math.inf
    rows[3]['loss'] = math.nan
    log.write_text('\n'.join(json.dumps(r) for r in rows))  # json writes Infinity / NaN, as the Runner's does
    summary = gc.loss_summary(tmp_path)
    assert (summary['finite'], summary['skipped_after_warmup']) == (False, [30])


def test_test_metrics_come_from_the_epoch_test_line() -> None:
    out = (
        '11/25 13:00:00 - mmengine - INFO - Epoch(test) [13/13]    coco/bbox_mAP: 0.1230  coco/bbox_mAP_50: 0.4560  '
        'data_time: 0.0100  time: 0.2000\n'
    )
    metrics = gc.test_metrics(out)
    assert metrics['coco/bbox_mAP'] == 0.123 and metrics['coco/bbox_mAP_50'] == 0.456
    assert gc.test_metrics('no test line\n') == {}


def test_bench_figures() -> None:
    results = {
        'machine': {},
        'infer_800x1333': dict(mmdet=0.030, mmpvt=0.020, speedup=1.5),
        'memory_2x800x1333': dict(mmdet_mib=9000.0, mmpvt_mib=5000.0, mmpvt_cp_mib=2000.0),
    }
    assert gc.bench_figures(results) == [
        'infer_800x1333 30.0 → 20.0 ms (1.50×)',
        'memory_2x800x1333 peak 9000 → 5000 MiB, 2000 with_cp',
    ]


# --- parity, on the CPU (the same code the GPU runs) ---------------------------------------------


@pytest.fixture(scope='module')
def small_pair():
    pytest.importorskip('mmdet')
    return gc.build_pair('small')


def test_parity_checks_pass_for_the_same_weights(small_pair, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(gc, 'build_pair', lambda arch: small_pair)
    checks = {c.name: c for c in gc.parity_checks('small', 'cpu', size=(64, 96))}
    print('\n'.join(f'{c.name}: {c.verdict} {c.figure}' for c in checks.values()))
    assert checks['PVT-S CUDA vs CPU, fp32'].verdict == 'skip'
    assert all(c.verdict == 'pass' for n, c in checks.items() if 'CUDA' not in n)


@pytest.mark.slow
def test_parity_checks_fail_for_one_changed_weight(small_pair, monkeypatch: pytest.MonkeyPatch) -> None:
    import copy

    theirs, ours = small_pair
    ours = copy.deepcopy(ours)
    with torch.no_grad():
        ours.stages[3].blocks[2].mlp.fc2.bias[0] += 0.05
    monkeypatch.setattr(gc, 'build_pair', lambda arch: (theirs, ours))
    checks = {c.name: c for c in gc.parity_checks('small', 'cpu', size=(64, 96))}
    assert checks['PVT-S fp32 vs mmdet, TF32 off'].verdict == 'fail'


def test_compat_folder_brings_pkg_resources_from_the_carried_setuptools(monkeypatch, tmp_path: Path) -> None:
    """mmengine 0.10.7 imports pkg_resources for ``mmdet::`` configs; setuptools >= 81 has none."""
    wheels = REPO / 'gpu_wheels'
    if not any(wheels.glob('setuptools-69*.whl')):
        pytest.skip('no gpu_wheels/ here (make gpu-wheels)')
    monkeypatch.setattr(gc, 'importable', lambda module: False)
    ctx = gc.Context(gc.parse_args(['setup', '--wheels', str(wheels), '--build-dir', str(tmp_path), '--device', 'cpu']))
    state = gc.compat_path(ctx)
    assert state['compat'] == ['scipy: stand-in', 'pkg_resources from setuptools 69']
    code = 'import pkg_resources, scipy, sys; print(pkg_resources.__file__); print("setuptools" in sys.modules)'
    env = {**os.environ, 'PYTHONPATH': state['stand_ins']}
    out = subprocess.run([sys.executable, '-W', 'ignore', '-c', code], capture_output=True, text=True, env=env)
    assert out.stdout.split() == [f'{state["stand_ins"]}/pkg_resources/__init__.py', 'False'], out.stderr
