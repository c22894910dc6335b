"""Train a detector (mmdet config) or a segmentor (mmseg config) with a PVT backbone.

Usage: python tools/train.py CONFIG [--work-dir DIR] [--resume [PATH]] [--amp]
       [--auto-scale-lr] [--cfg-options KEY=VALUE ...] [--launcher {none,pytorch,slurm,mpi}]
The library is chosen by the config's default_scope; see mmpvt/launch/main.py.
"""

from __future__ import annotations

from mmpvt.launch.entry import run_tool
from mmpvt.launch.main import train

if __name__ == '__main__':
    run_tool(train)  # a config mistake ends with one 'error:' line and exit status 1
