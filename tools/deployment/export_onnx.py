"""Export a PVT backbone, or a whole detector/segmentor without post-processing, to ONNX.

Height and width stay dynamic (multiples of 32). The export is checked with onnxruntime at the
example size and at a second size; the script fails if any output differs from PyTorch's by more
than ``--tolerance``. torch writes the weights to OUT.data beside OUT (ONNX external data): keep the
two files together. The outputs are named (``stage1`` …, ``cls_score_0`` …, ``seg_logits``).

Examples:
    python tools/deployment/export_onnx.py --arch small --out pvt_s.onnx
    python tools/deployment/export_onnx.py configs/retinanet_pvt_t_fpn_1x_coco.py \
        --checkpoint work_dirs/retinanet_pvt_t_fpn_1x_coco/epoch_12.pth --whole --shape 800 1344 --out retinanet.onnx
"""

from __future__ import annotations

import argparse
import importlib
import os.path as osp

import torch
from mmengine.registry import DefaultScope
from torch import nn

import mmpvt
from mmpvt.checkpoint import allow_mmengine_checkpoints, load_pretrained, missing_checkpoint
from mmpvt.export import TensorForward, check_export_shape, export_onnx, max_abs_diffs
from mmpvt.launch import ConfigError
from mmpvt.launch.cfg_options import CfgOptionsAction
from mmpvt.launch.checkpoints import load_checked
from mmpvt.launch.config_checks import load_config
from mmpvt.launch.entry import run_tool, user_error


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument('config', nargs='?', help='mmdet/mmseg config (omit to export a bare --arch backbone)')
    parser.add_argument('--arch', choices=sorted(mmpvt.ARCH_SETTINGS), help='backbone variant, when no CONFIG')
    parser.add_argument(
        '--checkpoint',
        help='weights to export: for a backbone, an official, mmdet or mmpvt backbone file or a whole-model '
        'checkpoint (its backbone is taken); with --whole, a checkpoint of the whole model. Default: random weights',
    )
    parser.add_argument(
        '--whole',
        action='store_true',
        help="export the config's whole model (its tensor forward: no NMS or other post-processing), not its backbone",
    )
    parser.add_argument(
        '--shape', type=int, nargs=2, default=(224, 224), metavar=('H', 'W'), help='example input size, multiples of 32'
    )
    parser.add_argument('--opset', type=int, default=18, help='ONNX opset version (17 or later)')
    parser.add_argument(
        '--tolerance',
        type=float,
        default=1e-4,
        help='largest |onnxruntime - PyTorch| allowed on any output; above it the tool exits with status 1',
    )
    parser.add_argument(
        '--cfg-options', nargs='+', action=CfgOptionsAction, help='override config settings (key=value), as train.py'
    )
    parser.add_argument('--out', required=True, help='the .onnx file to write (must not exist); weights go to OUT.data')
    args = parser.parse_args(argv)
    if (args.config is None) == (args.arch is None):
        parser.error('give either a CONFIG or --arch')
    if args.whole and args.config is None:
        parser.error('--whole needs a CONFIG')
    if args.opset < 17:
        parser.error(f'--opset must be 17 or later, got {args.opset}')
    try:
        check_export_shape(args.shape)
    except ValueError as err:
        parser.error(str(err))
    return args


def build(args: argparse.Namespace) -> nn.Module:
    """The module to export, with ``--checkpoint`` loaded (checked against the model first)."""
    if args.config is None:
        model: nn.Module = mmpvt.PVT(args.arch)
        if args.checkpoint:
            with user_error('--checkpoint'):
                load_pretrained(model, args.checkpoint)
        return model
    cfg = load_config(args.config, args.cfg_options)
    registry = importlib.import_module(f'{cfg.default_scope}.registry').MODELS
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        whole = registry.build(cfg.model)
    if args.checkpoint and args.whole:
        load_checked(whole, args.checkpoint)  # another model's checkpoint: refused, not a RuntimeError
    elif args.checkpoint:
        with user_error('--checkpoint'):
            load_pretrained(whole.backbone, args.checkpoint)
    return TensorForward(whole) if args.whole else whole.backbone


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if osp.exists(args.out) or osp.exists(f'{args.out}.data'):
        raise ConfigError(f'{args.out} (or {args.out}.data) exists; refusing to overwrite it: choose another --out')
    if args.checkpoint and not osp.isfile(args.checkpoint):
        raise ConfigError(f'--checkpoint: {missing_checkpoint(args.checkpoint)}')
    allow_mmengine_checkpoints()
    torch.manual_seed(0)
    model = build(args).eval()
    names = export_onnx(model, args.out, args.shape, opset=args.opset)
    h, w = args.shape
    worst = 0.0
    for shape in [(h, w), (h + 64, w + 32)]:
        diffs = max_abs_diffs(args.out, model, torch.randn(1, 3, *shape))
        worst = max(worst, *diffs)
        print(f'{shape[0]}×{shape[1]}: max |onnxruntime − torch| per output: ' + ', '.join(f'{d:.2e}' for d in diffs))
    ok = worst <= args.tolerance
    weights = f'{args.out}.data'
    where = f'; the weights are in {weights} beside it (keep the two files together)' if osp.exists(weights) else ''
    print(f'wrote {args.out} (opset {args.opset}){where}')
    print(f'outputs: {", ".join(names)}; input: image (1×3×H×W, H and W multiples of 32)')
    print(f'{"OK" if ok else "MISMATCH"} at tolerance {args.tolerance:g}')
    return 0 if ok else 1


if __name__ == '__main__':
    run_tool(main)
