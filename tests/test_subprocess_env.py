"""Every subprocess the tests start imports the checkout under test, not whatever mmpvt is installed.

The decoy below is an ``mmpvt`` package that an inherited PYTHONPATH (or an editable install of another
clone) would put ahead of site-packages; ``checkout_env`` must still resolve ``import mmpvt`` to this
repository, from any working directory and through the tools' own scripts.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, checkout_env

PRINT_MMPVT = 'import mmpvt, pathlib; print(pathlib.Path(mmpvt.__file__).resolve())'


@pytest.fixture
def decoy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An inherited PYTHONPATH whose first entry holds another ``mmpvt``."""
    package = tmp_path / 'decoy' / 'mmpvt'
    package.mkdir(parents=True)
    (package / '__init__.py').write_text('raise ImportError("the decoy mmpvt was imported")\n')
    monkeypatch.setenv('PYTHONPATH', str(package.parent))
    return package.parent


def test_decoy_is_what_an_unprepared_subprocess_imports(decoy: Path, tmp_path: Path) -> None:
    """Sanity: without checkout_env the decoy wins, so the next test can tell the two apart."""
    result = subprocess.run([sys.executable, '-c', PRINT_MMPVT], capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode != 0 and 'the decoy mmpvt was imported' in result.stderr


def test_subprocess_imports_this_checkout(decoy: Path, tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, '-c', PRINT_MMPVT], capture_output=True, text=True, cwd=tmp_path, env=checkout_env()
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert Path(result.stdout.strip()).is_relative_to(REPO / 'mmpvt')
    assert checkout_env()['PYTHONPATH'].split(os.pathsep)[1] == str(decoy)  # what was inherited is kept, after REPO


def test_tools_import_this_checkout(decoy: Path, tmp_path: Path) -> None:
    """A tool started as the tests start tools (``python tools/X.py``) gets this checkout's mmpvt too."""
    config = tmp_path / 'cfg.py'
    config.write_text('model = dict(type="X")\n')
    result = subprocess.run(
        [sys.executable, str(REPO / 'tools' / 'train.py'), str(config)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=checkout_env(),
    )
    assert result.returncode == 1 and 'no default_scope' in result.stderr, result.stderr[-2000:]


#: The tests that start the tools (or Python code importing mmpvt) in subprocesses, directly or through
#: helpers.run_tool (helpers.py is checked too).
TOOL_TESTS = (
    'helpers.py',
    'test_analysis_tools.py',
    'test_demo.py',
    'test_docs_commands.py',
    'test_dist_train.py',
    'test_e2e.py',
    'test_e2e_errors.py',
    'test_export.py',
    'test_plot_curves.py',
    'test_reliability.py',
    'test_tool_errors.py',
    'test_tools.py',
    'test_untrusted_checkpoints.py',
    'test_visualization.py',
)


def test_every_subprocess_of_the_tool_tests_gets_an_environment() -> None:
    """Each ``subprocess.run`` / ``Popen`` of the tool tests passes ``env=`` (built by checkout_env)."""
    for path in (REPO / 'tests' / name for name in TOOL_TESTS):
        calls = [
            node
            for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in ('run', 'Popen', 'call', 'check_call', 'check_output')
            and isinstance(node.func.value, ast.Name)
            and node.func.value.id == 'subprocess'
        ]
        without_env = [node.lineno for node in calls if not any(k.arg == 'env' for k in node.keywords)]
        through_helpers = 'run_tool(' in path.read_text() and path.name != 'helpers.py'
        assert calls or through_helpers, f'{path.name} starts no subprocess: take it off TOOL_TESTS'
        assert not without_env, f'{path.name}, lines {without_env}: pass env=checkout_env() (helpers)'
