"""Test a detector (mmdet config) or a segmentor (mmseg config) from a checkpoint.

Usage: python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out RESULTS.pkl]
       [--show-dir DIR] [--cfg-options KEY=VALUE ...] [--launcher {none,pytorch,slurm,mpi}]
The library is chosen by the config's default_scope; see mmpvt/launch/main.py.
"""

from __future__ import annotations

import sys

from mmpvt.launch import ConfigError
from mmpvt.launch.main import test


def main() -> None:
    """Run testing; config mistakes end with their message and exit status 1."""
    try:
        test()
    except ConfigError as err:
        sys.exit(f'error: {err}')


if __name__ == '__main__':
    main()
