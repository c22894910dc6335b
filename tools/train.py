"""Train a detector (mmdet config) or a segmentor (mmseg config) with a PVT backbone.

Usage: python tools/train.py CONFIG [--work-dir DIR] [--resume [PATH]] [--amp]
       [--auto-scale-lr] [--cfg-options KEY=VALUE ...] [--launcher {none,pytorch,slurm,mpi}]
The library is chosen by the config's default_scope; see mmpvt/launch/main.py.
"""

from __future__ import annotations

import sys

from mmpvt.launch import ConfigError
from mmpvt.launch.main import train


def main() -> None:
    """Run training; config mistakes end with their message and exit status 1."""
    try:
        train()
    except ConfigError as err:
        sys.exit(f'error: {err}')


if __name__ == '__main__':
    main()
