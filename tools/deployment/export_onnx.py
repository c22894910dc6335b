"""Export a PVT backbone, or a whole detector/segmentor without post-processing, to ONNX.

Height and width stay dynamic (multiples of 32). The export is checked with
onnxruntime at the example size and at a second size; the script fails if any
output differs from PyTorch's by more than ``--tolerance``.

Examples:
    python tools/deployment/export_onnx.py --arch small --out pvt_s.onnx
    python tools/deployment/export_onnx.py configs/retinanet_pvt_t_fpn_1x_coco.py \
        --checkpoint work_dirs/retinanet_pvt_t_fpn_1x_coco/epoch_12.pth --whole --shape 800 1344 --out retinanet.onnx
"""

from __future__ import annotations

import argparse
import importlib
import os.path as osp
import sys

import torch
from mmengine.config import DictAction
from torch import nn

import mmpvt
from mmpvt.checkpoint import allow_mmengine_checkpoints, load_pretrained
from mmpvt.export import TensorForward, check_export_shape, export_onnx, max_abs_diffs
from mmpvt.launch.config_checks import load_config


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', nargs='?', help='mmdet/mmseg config (omit to export a bare --arch backbone)')
    parser.add_argument('--arch', choices=sorted(mmpvt.ARCH_SETTINGS), help='backbone variant when no config')
    parser.add_argument('--checkpoint', help='weights: mmpvt/official/mmdet backbone, or a whole-model checkpoint')
    parser.add_argument('--whole', action='store_true', help="export the config's whole model, not its backbone")
    parser.add_argument('--shape', type=int, nargs=2, default=(224, 224), metavar=('H', 'W'))
    parser.add_argument('--opset', type=int, default=18)
    parser.add_argument('--tolerance', type=float, default=1e-4)
    parser.add_argument('--cfg-options', nargs='+', action=DictAction, help='override config settings (key=value)')
    parser.add_argument('--out', required=True, help='the .onnx file to write (must not exist)')
    args = parser.parse_args(argv)
    if (args.config is None) == (args.arch is None):
        parser.error('give either a CONFIG or --arch')
    if args.whole and args.config is None:
        parser.error('--whole needs a CONFIG')
    if osp.exists(args.out):
        parser.error(f'{args.out} exists; refusing to overwrite it')
    try:
        check_export_shape(args.shape)
    except ValueError as err:
        parser.error(str(err))
    return args


def build(args: argparse.Namespace) -> nn.Module:
    """The module to export, with ``--checkpoint`` loaded."""
    if args.config is None:
        model: nn.Module = mmpvt.PVT(args.arch)
        if args.checkpoint:
            load_pretrained(model, args.checkpoint)
        return model
    cfg = load_config(args.config, args.cfg_options)
    registry = importlib.import_module(f'{cfg.default_scope}.registry').MODELS
    whole = registry.build(cfg.model)
    if args.checkpoint:
        if args.whole:
            from mmengine.runner import load_checkpoint

            load_checkpoint(whole, args.checkpoint, map_location='cpu', strict=True)
        else:
            load_pretrained(whole.backbone, args.checkpoint)
    return TensorForward(whole) if args.whole else whole.backbone


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    allow_mmengine_checkpoints()
    torch.manual_seed(0)
    model = build(args).eval()
    export_onnx(model, args.out, args.shape, opset=args.opset)
    h, w = args.shape
    worst = 0.0
    for shape in [(h, w), (h + 64, w + 32)]:
        diffs = max_abs_diffs(args.out, model, torch.randn(1, 3, *shape))
        worst = max(worst, *diffs)
        print(f'{shape[0]}×{shape[1]}: max |onnxruntime − torch| per output: ' + ', '.join(f'{d:.2e}' for d in diffs))
    ok = worst <= args.tolerance
    print(f'wrote {args.out} (opset {args.opset}); {"OK" if ok else "MISMATCH"} at tolerance {args.tolerance:g}')
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
