"""Draw the SRA attention map of a query pixel at every PVT stage, and optionally the pyramid.

Examples:
    python tools/analysis/vis_attention.py demo.jpg --arch small --checkpoint pretrained/pvt_small.pth \
        --query 320 200 --out attention.png --features-out features.png
    python tools/analysis/vis_attention.py demo.jpg --config configs/retinanet_pvt_t_fpn_1x_coco.py \
        --checkpoint work_dirs/retinanet_pvt_t_fpn_1x_coco/epoch_12.pth --out attention.png
"""

from __future__ import annotations

import argparse
import importlib
import os.path as osp
import sys

import mmcv
import torch
from torch import nn

import mmpvt
from mmpvt.checkpoint import allow_mmengine_checkpoints, load_pretrained
from mmpvt.launch.config_checks import load_config
from mmpvt.visualization import draw_attention, draw_features, feature_energy, image_to_tensor, stage_attention


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('image', help='image file')
    parser.add_argument('--arch', choices=sorted(mmpvt.ARCH_SETTINGS), help='backbone variant (without --config)')
    parser.add_argument('--config', help='an mmdet/mmseg config: its backbone is drawn')
    parser.add_argument('--checkpoint', help='weights (official, mmdet, mmpvt, or a whole-model checkpoint)')
    parser.add_argument('--query', type=int, nargs=2, metavar=('X', 'Y'), help='query pixel (default: centre)')
    parser.add_argument('--size', type=int, nargs=2, metavar=('H', 'W'), help='resize the image first')
    parser.add_argument('--out', default='attention.png', help='PNG of the attention maps')
    parser.add_argument('--features-out', help='also draw the four pyramid outputs into this PNG')
    args = parser.parse_args(argv)
    if (args.arch is None) == (args.config is None):
        parser.error('give either --arch or --config')
    if not osp.isfile(args.image):
        parser.error(f'image not found: {args.image}')
    return args


def build_backbone(args: argparse.Namespace) -> nn.Module:
    if args.config is None:
        backbone: nn.Module = mmpvt.PVT(args.arch)
    else:
        cfg = load_config(args.config)
        backbone = importlib.import_module(f'{cfg.default_scope}.registry').MODELS.build(cfg.model.backbone)
    if args.checkpoint:
        allow_mmengine_checkpoints()
        load_pretrained(backbone, args.checkpoint)
    if not isinstance(backbone, mmpvt.PyramidVisionTransformer):
        raise SystemExit(f'the backbone is a {type(backbone).__name__}, not an mmpvt PVT')
    return backbone.eval()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rgb = mmcv.imread(args.image, flag='color', channel_order='rgb')
    if rgb is None:
        raise SystemExit(f'cannot decode image: {args.image}')
    if args.size:
        rgb = mmcv.imresize(rgb, (args.size[1], args.size[0]))
    torch.manual_seed(0)
    model = build_backbone(args)
    query = tuple(args.query) if args.query else (rgb.shape[1] // 2, rgb.shape[0] // 2)
    maps, outs = stage_attention(model, image_to_tensor(rgb), query)
    draw_attention(rgb, maps, query, args.out)
    print(f'wrote {args.out}')
    for m in maps:
        (h, w), peak = m.weights.shape, m.weights.max()
        print(f'  stage {m.stage + 1}: {m.map_hw[0]}×{m.map_hw[1]} queries, {h}×{w} keys, max weight {peak:.3f}')
    if args.features_out:
        draw_features(rgb, feature_energy(outs), model.out_strides, args.features_out)
        print(f'wrote {args.features_out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
