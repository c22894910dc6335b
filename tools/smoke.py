"""Smoke run of the backbone: build PVT-T through mmdet's registry and run one image.

Usage: python tools/smoke.py [--arch tiny] [--size 224 224]
"""

from __future__ import annotations

import argparse
import time

import torch
from mmdet.registry import MODELS

import mmpvt


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--arch', default='tiny', choices=sorted(mmpvt.ARCH_SETTINGS))
    parser.add_argument('--size', type=int, nargs=2, default=(224, 224), metavar=('H', 'W'))
    args = parser.parse_args()
    torch.manual_seed(0)
    model = MODELS.build(dict(type='PVT', arch=args.arch)).eval()
    image = torch.randn(1, 3, *args.size)
    with torch.inference_mode():
        start = time.perf_counter()
        outs = model(image)
        elapsed = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f'mmpvt {mmpvt.__version__}: PVT-{args.arch} ({params:.2f} M parameters), input {tuple(image.shape)}')
    for out, stride in zip(outs, model.out_strides):
        print(f'  stride {stride:2d}: {tuple(out.shape)}')
    print(f'forward: {elapsed * 1000:.0f} ms')


if __name__ == '__main__':
    main()
