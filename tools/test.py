"""Test a detector (mmdet config) or a segmentor (mmseg config) from a checkpoint.

Usage: python tools/test.py CONFIG CHECKPOINT [--work-dir DIR] [--out RESULTS.pkl]
       [--show-dir DIR] [--cfg-options KEY=VALUE ...] [--launcher {none,pytorch,slurm,mpi}]
The library is chosen by the config's default_scope; see mmpvt/launch/main.py.
"""

from __future__ import annotations

from mmpvt.launch.entry import run_tool
from mmpvt.launch.main import test

if __name__ == '__main__':
    run_tool(test)  # a config mistake ends with one 'error:' line and exit status 1
