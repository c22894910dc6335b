"""Run a trained detector or segmentor on an image or a folder and draw the results as PNGs.

The library (mmdet or mmseg) is chosen by the config's ``default_scope``; drawing uses
OpenMMLab's own visualizers. Runs on the first GPU when CUDA is available, else on the CPU
(``--device`` chooses).

Examples:
    python tools/demo.py configs/toy/retinanet_pvt_t_fpn_toy_coco.py work_dirs/toy/epoch_12.pth demo.jpg
    python tools/demo.py configs/fpn_pvt_s_512x512_40k_ade20k.py fpn_pvt_s.pth images/ --out-dir vis/
"""

from __future__ import annotations

import argparse
import os
import os.path as osp
import sys

import mmcv
import torch
from mmengine.utils import track_iter_progress

from mmpvt import optimize_for_cpu_inference
from mmpvt.checkpoint import allow_mmengine_checkpoints
from mmpvt.launch.config_checks import load_config
from mmpvt.models.cpu_features import choose_cpu_dtype

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('config', help='mmdet or mmseg config')
    parser.add_argument('checkpoint', help='checkpoint of that model')
    parser.add_argument('input', help='an image, or a folder of images')
    parser.add_argument('--out-file', help='output PNG for a single image (default: <out-dir>/<name>.png)')
    parser.add_argument('--out-dir', default='demo_out', help='folder for the drawn results')
    parser.add_argument('--score-thr', type=float, default=0.3, help='detections below this score are not drawn')
    parser.add_argument('--device', help='cpu or cuda:N (default: cuda:0 when CUDA is available, else cpu)')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='mixed precision: float16 autocast on a GPU; on a CPU the PVT backbone in bfloat16 where the CPU has '
        'a bf16 matrix unit (AMX), fp32 elsewhere (printed)',
    )
    args = parser.parse_args(argv)
    if args.device is None:
        args.device = default_device()
    for path, what in [(args.config, 'config'), (args.checkpoint, 'checkpoint')]:
        if not osp.isfile(path):
            parser.error(f'{what} file not found: {path}')
    if not osp.exists(args.input):
        parser.error(f'input not found: {args.input}')
    return args


def default_device() -> str:
    """``'cuda:0'`` when CUDA is available, else ``'cpu'`` (mmdet's and mmseg's demos default to cuda:0)."""
    return 'cuda:0' if torch.cuda.is_available() else 'cpu'


def list_images(path: str) -> list[str]:
    if osp.isfile(path):
        return [path]
    images = sorted(osp.join(path, f) for f in os.listdir(path) if f.lower().endswith(IMAGE_SUFFIXES))
    if not images:
        raise SystemExit(f'no images ({", ".join(IMAGE_SUFFIXES)}) in folder {path}')
    return images


def build(cfg, checkpoint: str, device: str, amp: bool = False):
    """(model, inference function, visualizer) for the config's library; ``amp``: see ``--amp``."""
    if cfg.default_scope == 'mmdet':
        from mmdet.apis import inference_detector as infer
        from mmdet.apis import init_detector as init
        from mmdet.registry import VISUALIZERS
    else:
        from mmseg.apis import inference_model as infer
        from mmseg.apis import init_model as init
        from mmseg.registry import VISUALIZERS
    choice = choose_cpu_dtype('auto' if amp and device == 'cpu' else 'float32')
    if amp and device == 'cpu':
        print(f'--amp: the PVT backbone runs in {choice}')
    model = optimize_for_cpu_inference(init(cfg, checkpoint, device=device), choice)  # steps aside on a GPU
    cfg.visualizer.vis_backends = [dict(type='LocalVisBackend')]
    cfg.visualizer.save_dir = None
    visualizer = VISUALIZERS.build(cfg.visualizer)
    visualizer.dataset_meta = model.dataset_meta
    return model, infer, visualizer


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    allow_mmengine_checkpoints()
    cfg = load_config(args.config)
    images = list_images(args.input)
    if args.out_file and len(images) > 1:
        raise SystemExit('--out-file names one picture; the input is a folder: use --out-dir')
    model, infer, visualizer = build(cfg, args.checkpoint, args.device, args.amp)
    gpu_amp = args.amp and args.device != 'cpu'
    if not args.out_file:  # mmcv.imwrite makes the folder of --out-file itself
        os.makedirs(args.out_dir, exist_ok=True)
    written = []
    progress = track_iter_progress(images) if len(images) > 1 else images
    for path in progress:
        image = mmcv.imread(path, flag='color', channel_order='rgb')
        if image is None:
            raise SystemExit(f'cannot decode image: {path}')
        with torch.autocast('cuda', torch.float16, enabled=gpu_amp):
            result = infer(model, path)
        name = osp.splitext(osp.basename(path))[0]
        out_file = args.out_file or osp.join(args.out_dir, f'{name}.png')
        extra = dict(pred_score_thr=args.score_thr) if cfg.default_scope == 'mmdet' else {}
        visualizer.add_datasample(name, image, data_sample=result, draw_gt=False, out_file=out_file, **extra)
        written.append(out_file)
    print(f'wrote {len(written)} picture(s): {", ".join(written[:5])}{" ..." if len(written) > 5 else ""}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
