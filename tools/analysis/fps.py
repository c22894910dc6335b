"""Images per second of a trained detector or segmentor on its config's test images (the FPS benchmark).

mmdet's and mmseg's ``benchmark.py`` need CUDA; this one runs where the model runs (the CPU, with the CPU
fast paths as our tools apply them, or ``--device cuda``). The checkpoint is checked against the model
first (mmpvt's fit check). The images come from the config's test dataloader (its real pipeline, batch
size 1); after ``--warmup`` images, ``--images`` are timed through ``model.test_step`` (pre-processing on
the device, forward, post-processing such as NMS), without the data loading.

Example:
    python tools/analysis/fps.py configs/retinanet_pvt_s_fpn_1x_coco.py retinanet_pvt_s.pth --images 50
"""

from __future__ import annotations

import argparse
import time

import torch
from mmengine.registry import DefaultScope
from mmengine.runner import Runner

from mmpvt import optimize_for_cpu_inference
from mmpvt.checkpoint import allow_mmengine_checkpoints
from mmpvt.launch import ConfigError
from mmpvt.launch.cfg_options import CfgOptionsAction
from mmpvt.launch.checkpoints import load_checked
from mmpvt.launch.config_checks import load_config
from mmpvt.launch.data_checks import check_data
from mmpvt.launch.entry import run_tool


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument('config', help='mmdet or mmseg config')
    parser.add_argument('checkpoint', help='checkpoint of that model (.pth)')
    parser.add_argument('--images', type=int, default=50, help='images timed')
    parser.add_argument('--warmup', type=int, default=5, help='images run before timing')
    parser.add_argument('--device', default='cpu', help='cpu or cuda[:N]')
    parser.add_argument('--cfg-options', nargs='+', action=CfgOptionsAction, help='override config settings')
    args = parser.parse_args(argv)
    if args.images < 1 or args.warmup < 0:
        parser.error('--images must be at least 1 and --warmup at least 0')
    return args


def main(argv: list[str] | None = None) -> float:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    check_data(cfg, ['test_dataloader'])
    allow_mmengine_checkpoints()
    registry = __import__(f'{cfg.default_scope}.registry', fromlist=['MODELS']).MODELS
    cfg.model.get('backbone', {}).pop('init_cfg', None)  # weights come from the checkpoint
    loader_cfg = dict(cfg.test_dataloader, batch_size=1, num_workers=0, persistent_workers=False)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = registry.build(cfg.model)
        load_checked(model, args.checkpoint)
        model = model.to(args.device).eval()
        if args.device == 'cpu':
            model = optimize_for_cpu_inference(model)
        loader = Runner.build_dataloader(loader_cfg)
        needed = args.warmup + args.images
        if len(loader) < needed:
            raise ConfigError(f'the test set has {len(loader)} images; --warmup + --images need {needed}')
        seconds, timed = 0.0, 0
        with torch.inference_mode():
            for index, data in enumerate(loader):
                if index == needed:
                    break
                if args.device.startswith('cuda'):
                    torch.cuda.synchronize()
                start = time.perf_counter()
                model.test_step(data)
                if args.device.startswith('cuda'):
                    torch.cuda.synchronize()
                if index >= args.warmup:
                    seconds += time.perf_counter() - start
                    timed += 1
    fps = timed / seconds
    print(
        f'{args.config}: {fps:.2f} images/s ({1000 * seconds / timed:.1f} ms per image) over {timed} test images '
        f'after {args.warmup} warm-up, {args.device}, {torch.get_num_threads()} threads'
    )
    return fps


if __name__ == '__main__':
    run_tool(main)
