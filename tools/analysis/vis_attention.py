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

import mmcv
import torch
from mmengine.registry import DefaultScope
from torch import nn

import mmpvt
from mmpvt.checkpoint import allow_mmengine_checkpoints, load_pretrained, missing_checkpoint
from mmpvt.launch import ConfigError
from mmpvt.launch.config_checks import load_config
from mmpvt.launch.entry import run_tool, user_error
from mmpvt.visualization import draw_attention, draw_features, feature_energy, image_to_tensor, stage_attention


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument('image', help='image file')
    parser.add_argument('--arch', choices=sorted(mmpvt.ARCH_SETTINGS), help='backbone variant (without --config)')
    parser.add_argument('--config', help='an mmdet/mmseg config: its backbone is drawn')
    parser.add_argument(
        '--checkpoint', help='weights (official, mmdet, mmpvt, or a whole-model checkpoint); default: random weights'
    )
    parser.add_argument(
        '--query',
        type=int,
        nargs=2,
        metavar=('X', 'Y'),
        help='query pixel, in the (resized) image; default: its centre',
    )
    parser.add_argument('--size', type=int, nargs=2, metavar=('H', 'W'), help='resize the image first; default: as is')
    parser.add_argument('--out', default='attention.png', help='PNG of the attention maps')
    parser.add_argument('--features-out', help='also draw the four pyramid outputs into this PNG; default: not drawn')
    args = parser.parse_args(argv)
    if (args.arch is None) == (args.config is None):
        parser.error('give either --arch or --config')
    return args


def build_backbone(args: argparse.Namespace) -> nn.Module:
    """The backbone to draw, with ``--checkpoint`` loaded (checked against it first)."""
    if args.config is None:
        backbone: nn.Module = mmpvt.PVT(args.arch)
    else:
        cfg = load_config(args.config)
        with DefaultScope.overwrite_default_scope(cfg.default_scope):
            backbone = importlib.import_module(f'{cfg.default_scope}.registry').MODELS.build(cfg.model.backbone)
    if not isinstance(backbone, mmpvt.PyramidVisionTransformer):
        raise ConfigError(f'{args.config}: the backbone is a {type(backbone).__name__}, not an mmpvt PVT')
    if args.checkpoint:
        if not osp.isfile(args.checkpoint):
            raise ConfigError(f'--checkpoint: {missing_checkpoint(args.checkpoint)}')
        allow_mmengine_checkpoints()
        with user_error('--checkpoint'):  # the one fit check: another model's or variant's file is refused
            load_pretrained(backbone, args.checkpoint)
    return backbone.eval()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not osp.isfile(args.image):
        raise ConfigError(f'image not found: {args.image}')
    try:
        rgb = mmcv.imread(args.image, flag='color', channel_order='rgb')
    except Exception as err:  # OpenCV's assorted errors for what it cannot decode
        raise ConfigError(f'cannot decode image {args.image}: expected a JPEG, PNG or another image') from err
    if rgb is None:
        raise ConfigError(f'cannot decode image {args.image}: expected a JPEG, PNG or another image')
    if args.size:
        rgb = mmcv.imresize(rgb, (args.size[1], args.size[0]))
    torch.manual_seed(0)
    model = build_backbone(args)
    query = tuple(args.query) if args.query else (rgb.shape[1] // 2, rgb.shape[0] // 2)
    with user_error('--query' if args.query else ''):  # outside the image
        check_query(query, rgb.shape[:2])
    with user_error(f'{args.image} ({rgb.shape[1]}×{rgb.shape[0]})'):  # too small for the model
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


def check_query(query: tuple[int, int], hw: tuple[int, int]) -> None:
    """Refuse a query pixel outside an H×W image."""
    x, y = query
    if not (0 <= x < hw[1] and 0 <= y < hw[0]):
        raise ValueError(
            f'query pixel (x={x}, y={y}) is outside the {hw[1]}×{hw[0]} image; expected 0 <= X < {hw[1]} and '
            f'0 <= Y < {hw[0]} (after --size)'
        )


if __name__ == '__main__':
    run_tool(main)
