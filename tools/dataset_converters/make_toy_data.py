"""Write a small deterministic synthetic dataset in the COCO or ADE20K layout (``python -m mmpvt.datasets``).

Usage: python tools/dataset_converters/make_toy_data.py {coco,ade} ROOT [--num-train N]
       [--num-val N] [--size PX] [--seed S] [--force]

See :mod:`mmpvt.datasets.__main__`, which an installed package runs as ``python -m mmpvt.datasets``.
"""

from __future__ import annotations

from mmpvt.datasets.__main__ import main
from mmpvt.launch.entry import run_tool

if __name__ == '__main__':
    run_tool(main)
