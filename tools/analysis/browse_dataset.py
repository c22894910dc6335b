"""Draw what the training pipeline gives the model: each image after its transforms, with its boxes, masks or
label map, as PNGs (mmdet's and mmseg's ``browse_dataset.py``, for detection and segmentation configs alike).

mmdet's own works on our detection configs; mmseg's fails under OpenCV 5 (it draws on a non-contiguous array),
so this one draws a contiguous copy and takes both libraries' configs.

Example:
    python tools/analysis/browse_dataset.py configs/toy/fpn_pvt_t_toy_ade.py --out-dir browse/ --max-images 20
"""

from __future__ import annotations

import argparse
import importlib
import os.path as osp

import numpy as np
from mmengine.registry import DefaultScope
from mmengine.utils import ProgressBar

from mmpvt.launch import ConfigError
from mmpvt.launch.cfg_options import CfgOptionsAction
from mmpvt.launch.config_checks import load_config
from mmpvt.launch.data_checks import check_data
from mmpvt.launch.entry import run_tool


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument('config', help='mmdet or mmseg config')
    parser.add_argument('--out-dir', default='browse_dataset', help='folder for the pictures, one per image')
    parser.add_argument('--loader', default='train_dataloader', help="the config's dataloader to draw")
    parser.add_argument('--max-images', type=int, default=50, help='draw at most this many images')
    parser.add_argument('--cfg-options', nargs='+', action=CfgOptionsAction, help='override config settings')
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    if not cfg.get(args.loader):
        raise ConfigError(f'{args.config} has no {args.loader}')
    check_data(cfg, [args.loader])
    registry = importlib.import_module(f'{cfg.default_scope}.registry')
    cfg.visualizer.vis_backends = None  # pictures go to out_file
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        dataset = registry.DATASETS.build(cfg[args.loader].dataset)
        visualizer = registry.VISUALIZERS.build(cfg.visualizer)
    visualizer.dataset_meta = dataset.metainfo
    count = min(len(dataset), args.max_images)
    progress = ProgressBar(count)
    for index in range(count):
        item = dataset[index]
        image = np.ascontiguousarray(item['inputs'].permute(1, 2, 0).numpy()[..., ::-1])  # BGR tensor -> RGB
        sample = item['data_samples'].numpy()
        if 'gt_instances' in sample:
            instances = sample.gt_instances
            if hasattr(instances.get('bboxes'), 'tensor'):
                instances.bboxes = instances.bboxes.tensor
            if instances.get('masks') is not None and hasattr(instances.masks, 'to_ndarray'):
                instances.masks = instances.masks.to_ndarray().astype(bool)
        name = osp.basename(sample.img_path)
        out_file = osp.join(args.out_dir, f'{osp.splitext(name)[0]}.png')
        visualizer.add_datasample(name, image, sample, draw_pred=False, show=False, out_file=out_file)
        progress.update()
    print(f'\nwrote {count} picture(s) of {args.loader} to {args.out_dir}')
    return 0


if __name__ == '__main__':
    run_tool(main)
