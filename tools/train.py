"""Train a detector (mmdet config) or a segmentor (mmseg config) with a PVT backbone.

Usage: python tools/train.py CONFIG [--work-dir DIR] [--resume [PATH]] [--amp]
       [--auto-scale-lr] [--cfg-options KEY=VALUE ...] [--launcher {none,pytorch,slurm,mpi}]
The library is chosen by the config's default_scope; see mmpvt/launch/main.py.
"""

from __future__ import annotations

from mmpvt.engine.hooks import NonFiniteError
from mmpvt.launch.entry import run_tool
from mmpvt.launch.main import train

if __name__ == '__main__':
    # Exit status: 0 done; 1 an error (a config mistake or a diverged run ends with its one-line message);
    # 75 stopped by SIGTERM, SIGINT or SIGUSR1 after saving a checkpoint (continue with --resume).
    run_tool(train, NonFiniteError)
