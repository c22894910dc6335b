"""Multiply-adds (the PVT paper's "FLOPs") and parameters of a PVT backbone or a whole model.

Usage:
    python tools/analysis/get_flops.py --arch small                       # backbone, 224×224
    python tools/analysis/get_flops.py --arch small --shape 800 1333
    python tools/analysis/get_flops.py configs/retinanet_pvt_s_fpn_1x_coco.py --shape 800 1333
    python tools/analysis/get_flops.py configs/retinanet_pvt_s_fpn_1x_coco.py --backbone-only

Unlike mmcv's and mmengine's counters this includes the attention matrix products
(Q·Kᵀ and A·V, via ``mmpvt.sra_macs``), which at detection resolution are almost half
of PVT-S's arithmetic. Convolutions, linear layers and those products are counted;
norms, activations, softmax and post-processing (NMS) are not.
"""

from __future__ import annotations

import argparse

from mmpvt.analysis import MacCount, backbone_macs, config_macs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('config', nargs='?', help='mmdet/mmseg config; omit and give --arch for a bare backbone')
    parser.add_argument('--arch', help='a PVT variant (tiny, small, …, b0…b5, b2_li) instead of a config')
    parser.add_argument('--shape', nargs=2, type=int, metavar=('H', 'W'), help='input size (default 224 224)')
    parser.add_argument('--backbone-only', action='store_true', help="count only the config's backbone")
    args = parser.parse_args(argv)
    if (args.config is None) == (args.arch is None):
        parser.error('give either a CONFIG or --arch')
    return args


def report(title: str, count: MacCount) -> str:
    lines = [
        title,
        f'  multiply-adds: {count.gflops:.3f} G ("GFLOPs" in the PVT paper; {2 * count.gflops:.3f} GFLOP)',
        f'  parameters:    {count.params / 1e6:.2f} M',
    ]
    for kind, macs in sorted(count.by_kind.items()):
        lines.append(f'    {kind:<10} {macs / 1e9:9.3f} G ({macs / max(count.total, 1):.0%})')
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> MacCount:
    args = parse_args(argv)
    hw = tuple(args.shape) if args.shape else (224, 224)
    if args.arch:
        count = backbone_macs(args.arch, hw)
        title = f'PVT {args.arch} backbone, input 1×3×{hw[0]}×{hw[1]}'
    else:
        count = config_macs(args.config, hw, backbone_only=args.backbone_only)
        what = 'backbone of ' if args.backbone_only else ''
        title = f'{what}{args.config}, input 1×3×{hw[0]}×{hw[1]}'
    print(report(title, count))
    return count


if __name__ == '__main__':
    main()
