"""tools/setup_env.sh leaves the environment consistent and is idempotent (CI ran it just before)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_pip_check_finds_nothing_broken() -> None:
    """mmcv's build needs setuptools < 70, torch asks for >= 77: the build must not downgrade it here."""
    result = subprocess.run([sys.executable, '-m', 'pip', 'check'], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_mmengine_can_resolve_stock_configs() -> None:
    """mmengine 0.10.7 resolves ``mmdet::`` bases through pkg_resources, gone from setuptools >= 82."""
    code = 'from mmengine.utils import get_installed_path; print(get_installed_path("mmdet"))'
    result = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and 'mmdet' in result.stdout, result.stderr


def test_a_second_set_up_installs_nothing_and_says_so() -> None:
    env = dict(os.environ, PYTHON=sys.executable)
    result = subprocess.run(
        ['bash', str(ROOT / 'tools' / 'setup_env.sh')],
        capture_output=True,
        text=True,
        check=False,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith('[setup] ')]
    steps = [line for line in lines if line.endswith(' s)')]
    assert len(steps) >= 8 and all('kept' in line for line in steps), lines  # one timed line per step
    assert lines[-1].startswith('[setup] done: installed 0 (nothing); kept '), lines[-1]
    assert '[setup] pip check: no broken requirements' in lines


def load_flavour():
    import importlib.util

    spec = importlib.util.spec_from_file_location('mmcv_ops_flavour', ROOT / 'tools' / 'mmcv_ops_flavour.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cpu_only_ops_are_replaced_beside_a_cuda_torch_and_a_gpu(monkeypatch) -> None:
    import torch

    flavour = load_flavour()
    monkeypatch.setattr(torch.version, 'cuda', '13.0')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
    assert flavour.wanted() == 'cuda13.0'
    assert flavour.decide('cpu', 'cuda13.0') == 'replace'  # CUDA NMS would fail with these
    assert flavour.decide('cuda12.8', 'cuda13.0') == 'replace'  # built for another CUDA
    assert flavour.decide('cuda13.0', 'cuda13.0') == 'keep'
    assert flavour.decide(None, 'cuda13.0') == 'install'
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: False)  # a CUDA torch, no GPU: CPU ops do
    assert flavour.wanted() == 'cpu'
    monkeypatch.setenv('FORCE_CUDA', '1')  # building for a GPU on a machine without one
    assert flavour.wanted() == 'cuda13.0'
    monkeypatch.setattr(torch.version, 'cuda', None)  # a CPU torch cannot build CUDA ops at all
    assert flavour.wanted() == 'cpu'
    assert flavour.decide('cuda13.0', 'cpu') == 'keep'  # CUDA ops carry the CPU kernels too


def test_the_installed_ops_are_read_and_kept_here() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / 'tools' / 'mmcv_ops_flavour.py'), 'decide'], capture_output=True, text=True
    )
    import torch

    expected = 'keep cpu cpu' if torch.version.cuda is None else None
    assert result.returncode == 0, result.stderr
    if expected:
        assert result.stdout.strip() == expected
