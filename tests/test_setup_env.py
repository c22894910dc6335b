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
