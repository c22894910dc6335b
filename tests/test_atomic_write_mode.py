"""Checkpoints written through the atomic backend get the permissions a plain write would give."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from mmengine.fileio import LocalBackend

from mmpvt.engine.fileio import AtomicLocalBackend


@pytest.mark.parametrize('umask', [0o022, 0o002, 0o077])
def test_atomic_checkpoint_has_the_plain_backends_mode(tmp_path: Path, umask: int) -> None:
    """mkstemp creates 0600 files: on a shared cluster colleagues could not read the checkpoints."""
    previous = os.umask(umask)
    try:
        AtomicLocalBackend().put(b'atomic', tmp_path / 'atomic.pth')
        LocalBackend().put(b'plain', tmp_path / 'plain.pth')
    finally:
        os.umask(previous)
    modes = {name: stat.S_IMODE((tmp_path / name).stat().st_mode) for name in ('atomic.pth', 'plain.pth')}
    assert modes['atomic.pth'] == modes['plain.pth'] == 0o666 & ~umask, {k: oct(v) for k, v in modes.items()}
    assert (tmp_path / 'atomic.pth').read_bytes() == b'atomic'
