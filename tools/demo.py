"""Run a trained detector or segmentor on an image or a folder and draw the results as PNGs.

The library (mmdet or mmseg) is chosen by the config's ``default_scope``; drawing uses
OpenMMLab's own visualizers. The checkpoint must be one of the config's model (mmpvt's fit check:
another model's is refused, not drawn with wrong labels). Runs on the first GPU when CUDA is
available, else on the CPU (``--device`` chooses). Prints what was found in each image; ``--pred-out``
also saves it as JSON.

Examples:
    python tools/demo.py configs/toy/retinanet_pvt_t_fpn_toy_coco.py work_dirs/toy/epoch_12.pth demo.jpg
    python tools/demo.py configs/fpn_pvt_s_512x512_40k_ade20k.py fpn_pvt_s.pth images/ --out-dir vis/
    python tools/demo.py CONFIG CKPT images/ --score-thr 0.01 --batch-size 4 --pred-out preds.json
"""

from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import warnings
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import mmcv
import numpy as np
import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.utils import track_iter_progress
from PIL import Image, UnidentifiedImageError
from torch import nn

from mmpvt import optimize_for_cpu_inference
from mmpvt.checkpoint import allow_mmengine_checkpoints, missing_checkpoint
from mmpvt.engine.fileio import write_atomically
from mmpvt.engine.hooks.cpu_fast_paths import autocast_heads
from mmpvt.launch import ConfigError
from mmpvt.launch.cfg_options import CfgOptionsAction
from mmpvt.launch.checkpoints import load_checked
from mmpvt.launch.class_checks import dataset_classes, dataset_type
from mmpvt.launch.config_checks import load_config
from mmpvt.launch.entry import run_tool
from mmpvt.models.cpu_features import choose_cpu_dtype

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split('\n\n')[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument('config', help='mmdet or mmseg config')
    parser.add_argument('checkpoint', help='checkpoint of that model (.pth)')
    parser.add_argument('input', help=f'an image, or a folder of images ({" ".join(IMAGE_SUFFIXES)})')
    parser.add_argument('--out-file', help='output PNG for a single image (default: OUT_DIR/NAME.png)')
    parser.add_argument('--out-dir', default='demo_out', help='folder for the drawn results, one NAME.png per image')
    parser.add_argument(
        '--score-thr',
        type=float,
        default=0.3,
        help="detections scoring below this are neither drawn nor counted; below the config's own test_cfg "
        'score_thr, the model is run with this one',
    )
    parser.add_argument('--batch-size', type=int, default=1, help='images per forward pass')
    parser.add_argument('--pred-out', help='also save the predictions of every image to this JSON file')
    parser.add_argument('--device', help='cpu or cuda:N (default: cuda:0 when CUDA is available, else cpu)')
    parser.add_argument(
        '--amp',
        action='store_true',
        help='mixed precision: float16 autocast on a GPU; on a CPU the PVT backbone in bfloat16, the neck and heads '
        'under bfloat16 autocast, where the CPU has a bf16 matrix unit (AMX), fp32 elsewhere (printed)',
    )
    parser.add_argument('--cfg-options', nargs='+', action=CfgOptionsAction, help='override config settings')
    args = parser.parse_args(argv)
    if args.device is None:
        args.device = default_device()
    if args.batch_size < 1:
        parser.error(f'--batch-size must be at least 1, got {args.batch_size}')
    return args


def default_device() -> str:
    """``'cuda:0'`` when CUDA is available, else ``'cpu'`` (mmdet's and mmseg's demos default to cuda:0)."""
    return 'cuda:0' if torch.cuda.is_available() else 'cpu'


def list_images(path: str) -> list[str]:
    """``path`` itself, or the images of the folder ``path`` (by suffix), sorted."""
    if not osp.exists(path):
        raise ConfigError(f'input not found: {path}; expected an image or a folder of images')
    if osp.isfile(path):
        return [path]
    images = sorted(osp.join(path, f) for f in os.listdir(path) if f.lower().endswith(IMAGE_SUFFIXES))
    if not images:
        raise ConfigError(f'no images ({", ".join(IMAGE_SUFFIXES)}) in folder {path}')
    return images


def not_an_image(path: str) -> ConfigError:
    return ConfigError(f'cannot decode image {path}: expected a JPEG, PNG or another image OpenCV reads')


def check_images(paths: list[str]) -> None:
    """Refuse an input that is no image from its header (PIL reads a few kB), before anything is written."""
    for path in paths:
        try:
            with Image.open(path):
                pass
        except (UnidentifiedImageError, OSError) as err:
            raise not_an_image(path) from err


def read_image(path: str) -> np.ndarray:
    """The RGB pixels of ``path``; a file that is no image is a :class:`ConfigError`."""
    try:
        image = mmcv.imread(path, flag='color', channel_order='rgb')
    except Exception as err:  # mmcv/OpenCV raise assorted errors for what they cannot decode
        raise not_an_image(path) from err
    if image is None:
        raise not_an_image(path)
    return image


def lower_score_thr(node: Any, threshold: float) -> list[float]:
    """Lower every ``score_thr`` of a model's ``test_cfg`` above ``threshold`` to it, in place; the old values."""
    lowered = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == 'score_thr' and isinstance(value, int | float) and value > threshold:
                node[key] = threshold
                lowered.append(float(value))
            else:
                lowered += lower_score_thr(value, threshold)
    return lowered


def library(scope: str) -> tuple[Callable[..., nn.Module], Callable[..., Any], Any]:
    """(init, inference, visualizer registry) of mmdet or mmseg."""
    if scope == 'mmdet':
        from mmdet.apis import inference_detector, init_detector
        from mmdet.registry import VISUALIZERS

        return init_detector, inference_detector, VISUALIZERS
    from mmseg.apis import inference_model, init_model
    from mmseg.registry import VISUALIZERS

    return init_model, inference_model, VISUALIZERS


def dataset_meta(cfg: Config, model: nn.Module, checkpoint: Mapping[str, Any]) -> dict[str, Any]:
    """The class names and palette to draw with: the checkpoint's names, else the config's test set's.

    mmdet's ``init_detector`` puts the config's palette in ``model.dataset_meta``; mmdet and mmseg would fall
    back to COCO's or Cityscapes' names when a checkpoint has none: the config's are the right ones.
    """
    found = dict(getattr(model, 'dataset_meta', None) or {})
    dataset = cfg.test_dataloader.dataset if cfg.get('test_dataloader') else {}
    meta = checkpoint.get('meta') or {}
    saved = meta.get('dataset_meta') or ({'classes': meta['CLASSES']} if 'CLASSES' in meta else {})
    saved = {str(k).lower(): v for k, v in saved.items()}
    listed = dataset_classes(cfg.default_scope, dataset) if dataset else None
    if saved.get('classes'):
        found['classes'] = tuple(saved['classes'])
        if saved.get('palette') is not None and found.get('palette') in (None, 'random'):
            found['palette'] = saved['palette']
    elif listed:
        print_log("the checkpoint names no classes; drawing with those of the config's test set", logger='current')
        found['classes'] = listed[0]
    count = len(found.get('classes') or ())
    if found.get('palette') is None and count:  # mmseg's visualizer needs one colour per class
        palette = (getattr(dataset_type(cfg.default_scope, dataset), 'METAINFO', None) or {}).get('palette')
        fits = palette is not None and len(palette) >= count
        found['palette'] = list(palette) if fits else np.random.default_rng(0).integers(0, 256, (count, 3)).tolist()
    return found


def build(cfg: Config, checkpoint: str, device: str, amp: bool = False) -> tuple[nn.Module, Callable[..., Any], Any]:
    """(model, inference function, visualizer) for the config's library, the checkpoint checked and loaded;
    ``amp``: see ``--amp``."""
    init, infer, visualizers = library(cfg.default_scope)
    with warnings.catch_warnings(record=True):  # "checkpoint is None, use COCO classes": the checkpoint's come next
        model = init(cfg, None, device='cpu')
    loaded = load_checked(model, checkpoint)  # another model's checkpoint: refused, not loaded leniently
    model.dataset_meta = dataset_meta(cfg, model, loaded)
    choice = choose_cpu_dtype('auto' if amp and device == 'cpu' else 'float32')
    model = optimize_for_cpu_inference(model.to(device).eval(), choice)  # steps aside on a GPU
    if amp and device == 'cpu':
        heads = autocast_heads(model, choice.dtype)
        after = f'; {", ".join(heads)} under {str(choice.dtype)[6:]} autocast' if heads else ''
        print(f'--amp: the PVT backbone runs in {choice}{after}')
    cfg.visualizer.vis_backends = None  # the pictures go to out_file: no backend, no save_dir
    cfg.visualizer.save_dir = None
    visualizer = visualizers.build(cfg.visualizer)
    visualizer.dataset_meta = model.dataset_meta
    return model, infer, visualizer


def describe(result: Any, classes: tuple[str, ...], score_thr: float) -> dict[str, Any]:
    """What one image's prediction holds: detections above ``score_thr``, or the classes' share of the pixels."""
    name = lambda label: classes[label] if 0 <= label < len(classes) else str(label)  # noqa: E731
    if hasattr(result, 'pred_instances'):
        instances = result.pred_instances
        keep = instances.scores >= score_thr
        labels = instances.labels[keep].tolist()
        return dict(
            detections=[
                dict(
                    label=label, name=name(label), score=round(float(score), 4), bbox=[round(float(v), 2) for v in box]
                )
                for label, score, box in zip(labels, instances.scores[keep], instances.bboxes[keep])
            ]
        )
    labels = result.pred_sem_seg.data.flatten()
    counts = torch.bincount(labels.long().cpu())
    total = int(labels.numel())
    shares = {name(i): round(int(n) / total, 4) for i, n in enumerate(counts.tolist()) if n}
    return dict(classes=dict(sorted(shares.items(), key=lambda item: -item[1])))


def summary(path: str, found: Mapping[str, Any], score_thr: float) -> str:
    """One line per image: the number of detections by class, or the largest classes' shares."""
    if 'detections' in found:
        by_class = Counter(d['name'] for d in found['detections'])
        listing = ', '.join(f'{cls} {n}' for cls, n in by_class.most_common())
        return f'{path}: {len(found["detections"])} detection(s) scoring >= {score_thr:g}' + (
            f' ({listing})' if listing else ''
        )
    top = ', '.join(f'{cls} {share:.0%}' for cls, share in list(found['classes'].items())[:3])
    return f'{path}: {top}'


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not osp.isfile(args.checkpoint):
        raise ConfigError(missing_checkpoint(args.checkpoint))
    images = list_images(args.input)
    if args.out_file and len(images) > 1:
        raise ConfigError(f'--out-file names one picture but {args.input} is a folder of {len(images)}: use --out-dir')
    allow_mmengine_checkpoints()
    cfg = load_config(args.config, args.cfg_options)
    lowered = lower_score_thr(cfg.model.get('test_cfg'), args.score_thr) if cfg.default_scope == 'mmdet' else []
    if lowered:
        print_log(
            f"--score-thr {args.score_thr:g} is below the config's test_cfg score_thr {max(lowered):g}: "
            'the model keeps the lower-scoring boxes too',
            logger='current',
        )
    check_images(images)  # every input is an image before anything is written
    model, infer, visualizer = build(cfg, args.checkpoint, args.device, args.amp)
    gpu_amp = args.amp and args.device != 'cpu'
    if not args.out_file:  # mmcv.imwrite makes the folder of --out-file itself
        os.makedirs(args.out_dir, exist_ok=True)
    written, predictions = [], {}
    batches = [images[i : i + args.batch_size] for i in range(0, len(images), args.batch_size)]
    for batch in track_iter_progress(batches) if len(batches) > 1 else batches:
        with torch.autocast('cuda', torch.float16, enabled=gpu_amp):
            results = infer(model, batch)
        for path, result in zip(batch, results):
            name = osp.splitext(osp.basename(path))[0]
            out_file = args.out_file or osp.join(args.out_dir, f'{name}.png')
            extra = dict(pred_score_thr=args.score_thr) if cfg.default_scope == 'mmdet' else {}
            image = read_image(path)
            visualizer.add_datasample(name, image, data_sample=result, draw_gt=False, out_file=out_file, **extra)
            written.append(out_file)
            predictions[path] = describe(result, tuple(model.dataset_meta.get('classes') or ()), args.score_thr)
            print(summary(path, predictions[path], args.score_thr))
    print(f'wrote {len(written)} picture(s): {", ".join(written[:5])}{" ..." if len(written) > 5 else ""}')
    if args.pred_out:
        write_atomically(json.dumps(predictions, indent=1).encode(), args.pred_out)
        print(f'wrote the predictions of {len(predictions)} image(s) to {args.pred_out}')
    return 0


if __name__ == '__main__':
    run_tool(main)
