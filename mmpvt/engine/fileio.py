"""Whole-or-absent files: the one atomic writer of mmpvt and the ``atomic_local`` file backend around it.

A config names the backend for its checkpoints::

    default_hooks = dict(checkpoint=dict(type='CheckpointHook', backend_args=dict(backend='atomic_local')))

so that a process killed while saving leaves the previous checkpoint or the new one, never half of
one that ``--resume`` would then fail on. ``tools/model_converters/pvt2mmpvt.py`` writes through
:func:`write_atomically` as well.
"""

from __future__ import annotations

import os
import os.path as osp
import tempfile
from pathlib import Path

from mmengine.fileio import LocalBackend, register_backend


def new_file_mode() -> int:
    """The mode ``open(path, 'w')`` gives a new file: 0o666 less the process's umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def write_atomically(data: bytes, path: str | os.PathLike[str]) -> None:
    """Write ``data`` to a temporary file beside ``path``, fsync it, then rename it over ``path``.

    The temporary file is hidden (``.NAME.*.tmp``), so nothing takes it for a checkpoint; it gets
    the mode a plain ``open`` would give (``mkstemp`` makes 0600) and is removed if writing fails.
    """
    path = os.fspath(path)
    directory = osp.dirname(osp.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f'.{osp.basename(path)}.', suffix='.tmp', dir=directory)
    try:
        os.fchmod(fd, new_file_mode())
        with os.fdopen(fd, 'wb') as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if osp.exists(tmp):
            os.remove(tmp)
        raise


class AtomicLocalBackend(LocalBackend):
    """mmengine's local file backend whose ``put`` replaces the target atomically (:func:`write_atomically`)."""

    def put(self, obj: bytes, filepath: str | Path) -> None:
        """Write ``obj`` to ``filepath``: the old file or the whole new one, whatever happens meanwhile."""
        write_atomically(obj, filepath)


register_backend('atomic_local', AtomicLocalBackend, force=True)
