"""Multiply-adds (the PVT paper's "FLOPs") and parameters of a PVT backbone or a whole model.

Usage:
    python tools/analysis/get_flops.py --arch small                       # backbone, 224×224
    python tools/analysis/get_flops.py --arch small --shape 800 1333
    python tools/analysis/get_flops.py configs/retinanet_pvt_s_fpn_1x_coco.py --shape 800 1333
    python tools/analysis/get_flops.py configs/retinanet_pvt_s_fpn_1x_coco.py --backbone-only
    python tools/analysis/get_flops.py configs/retinanet_pvt_s_fpn_1x_coco.py --cfg-options model.backbone.arch=tiny

Unlike mmcv's and mmengine's counters this includes the attention matrix products
(Q·Kᵀ and A·V, via ``mmpvt.sra_macs``), which at detection resolution are almost half
of PVT-S's arithmetic. Convolutions, linear layers and those products are counted;
norms, activations, softmax and post-processing (NMS) are not. No weights are read: a count
does not depend on them (the config's ``Pretrained`` backbone file is not loaded).
"""

from __future__ import annotations

import argparse

from mmpvt.analysis import MacCount, backbone_macs, config_macs
from mmpvt.launch.cfg_options import CfgOptionsAction
from mmpvt.launch.config_checks import load_config
from mmpvt.launch.entry import run_tool, user_error
from mmpvt.models.pvt import ARCH_SETTINGS


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n')[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument('config', nargs='?', help='mmdet/mmseg config; omit and give --arch for a bare backbone')
    parser.add_argument('--arch', choices=sorted(ARCH_SETTINGS), help='a PVT variant instead of a config')
    parser.add_argument('--shape', nargs=2, type=int, default=(224, 224), metavar=('H', 'W'), help='input size')
    parser.add_argument('--backbone-only', action='store_true', help="count only the config's backbone")
    parser.add_argument(
        '--cfg-options', nargs='+', action=CfgOptionsAction, help='override config settings (key=value), as train.py'
    )
    args = parser.parse_args(argv)
    if (args.config is None) == (args.arch is None):
        parser.error('give either a CONFIG or --arch')
    if args.arch and args.cfg_options:
        parser.error('--cfg-options needs a CONFIG')
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
    hw = tuple(args.shape)
    with user_error(f'--shape {hw[0]} {hw[1]}'):  # an input too small for the model
        if args.arch:
            count = backbone_macs(args.arch, hw)
            title = f'PVT {args.arch} backbone, input 1×3×{hw[0]}×{hw[1]}'
        else:
            cfg = load_config(args.config, args.cfg_options)
            count = config_macs(cfg, hw, backbone_only=args.backbone_only)
            what = 'backbone of ' if args.backbone_only else ''
            title = f'{what}{args.config}, input 1×3×{hw[0]}×{hw[1]}'
    print(report(title, count))
    return count


if __name__ == '__main__':
    run_tool(main)
