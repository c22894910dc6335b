"""What the start-up checks cost: check_image_files on COCO train2017's 118,287 images, checkpoint reads.

Image check: N empty image files in a temporary folder and a dataset of N entries (serialised
like mmdet's, so ``get_data_info`` unpickles each entry as in a real run); times
``check_image_files`` warm (the file system's metadata cached, as after a first pass) and
counts the ``stat`` calls. On a network file system (Lustre, NFS) each ``stat`` is a
metadata request: multiply the count by its latency there.

COCO annotation check (``--coco``): a synthetic annotation file of train2017's size (118,287 images,
860,001 annotations with 24-point polygons: about COCO's 448 MB); times
:func:`~mmpvt.launch.coco_checks.check_coco_file` (parse and walk) against pycocotools' ``COCO(path)`` alone
(what mmdet's dataset does with the same file before its own per-image parsing).

Label-map check (``--label-maps N``): N pairs of a 683×512 JPEG and its PNG label map (ADE20K's
training set is 20,210); times :func:`~mmpvt.launch.label_checks.check_label_map` (both headers) over all of them,
warm, and :func:`~mmpvt.launch.label_checks.check_label_values` (every map decoded, on all cores; then again,
answered by its cache). The label maps are noise over 0..150, the slowest PNGs to decode.

Checkpoint reads (``--checkpoint-mb``): the bytes a resume's checks read from the disk for one
checkpoint, the file dropped from the page cache first (/proc/self/io ``read_bytes``):
:func:`~mmpvt.checkpoint.load_file` (what each check did before) against
:func:`~mmpvt.launch.checkpoints.checkpoint_shapes` (memory-mapped: the index only).

    python tools/analysis/check_cost.py                   # 118287 images
    python tools/analysis/check_cost.py --images 5000 --checkpoint-mb 150
    python tools/analysis/check_cost.py --images 0 --coco --label-maps 20210
"""

from __future__ import annotations

import argparse
import io
import json
import os
import os.path as osp
import tempfile
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from mmengine.config import Config
from mmengine.dataset import BaseDataset
from PIL import Image

from mmpvt.checkpoint import load_file
from mmpvt.launch import data_checks, label_checks
from mmpvt.launch.checkpoints import checkpoint_shapes
from mmpvt.launch.coco_checks import check_coco_file
from mmpvt.launch.data_checks import check_image_files
from mmpvt.launch.entry import run_tool
from mmpvt.launch.label_checks import check_label_map, check_label_values

COCO_TRAIN_IMAGES = 118_287
COCO_TRAIN_ANNOTATIONS = 860_001


class ImageList(BaseDataset):
    """A dataset whose entries are just image paths, serialised as mmdet's datasets are."""

    def __init__(self, paths: list[str]) -> None:
        self._paths = paths
        super().__init__(ann_file='', serialize_data=True, lazy_init=False)

    def load_data_list(self) -> list[dict[str, Any]]:
        return [dict(img_path=p, img_id=i, height=480, width=640) for i, p in enumerate(self._paths)]


def image_check_cost(count: int, folder: str) -> dict[str, float]:
    """Seconds and ``stat`` calls of check_image_files over ``count`` existing images."""
    paths = [osp.join(folder, f'{i:012d}.jpg') for i in range(count)]
    for path in paths:
        with open(path, 'wb') as f:
            f.write(b'\xff')  # one byte: the check refuses empty files
    dataset = ImageList(paths)
    runner = SimpleNamespace(train_loop=SimpleNamespace(dataloader=SimpleNamespace(dataset=dataset)), cfg=Config())
    stats = 0
    os_stat = data_checks.os.stat

    def counting_stat(path: str) -> os.stat_result:
        nonlocal stats
        stats += 1
        return os_stat(path)

    check_image_files(runner)  # first pass: fills the metadata cache
    data_checks.os.stat = counting_stat
    try:
        start = time.perf_counter()
        check_image_files(runner)
        seconds = time.perf_counter() - start
    finally:
        data_checks.os.stat = os_stat
    start = time.perf_counter()
    for i in range(len(dataset)):
        dataset.get_data_info(i)
    walk = time.perf_counter() - start
    return dict(seconds=seconds, stats=stats, walk_seconds=walk)


def coco_check_cost(folder: str, images: int = COCO_TRAIN_IMAGES, annotations: int = COCO_TRAIN_ANNOTATIONS) -> dict:
    """Seconds of check_coco_file and of pycocotools' COCO() on a synthetic file of COCO train2017's shape."""
    from pycocotools.coco import COCO

    rng = np.random.default_rng(0)
    path = osp.join(folder, 'instances_train2017.json')
    polygon = [round(float(v), 2) for v in rng.uniform(0, 400, 48)]
    content = dict(
        images=[dict(id=i, file_name=f'{i:012d}.jpg', height=480, width=640) for i in range(1, images + 1)],
        annotations=[
            dict(
                id=i,
                image_id=1 + i % images,
                category_id=1 + i % 80,
                bbox=[10.5, 20.25, 100.0, 80.5],
                area=8050.0,
                segmentation=[polygon],
                iscrowd=0,
            )
            for i in range(1, annotations + 1)
        ],
        categories=[dict(id=i, name=f'class{i}', supercategory='thing') for i in range(1, 81)],
    )
    with open(path, 'w') as f:
        json.dump(content, f)
    del content
    check_coco_file(path)  # warm the page cache
    start = time.perf_counter()
    check_coco_file(path)
    check = time.perf_counter() - start
    start = time.perf_counter()
    COCO(path)
    cocoapi = time.perf_counter() - start
    return dict(megabytes=osp.getsize(path) / 2**20, seconds=check, cocoapi_seconds=cocoapi)


def label_map_cost(folder: str, pairs: int) -> dict:
    """Seconds of check_label_map over ``pairs`` image / label-map pairs (warm), and of one stat per file."""
    rng = np.random.default_rng(0)
    jpeg, png = io.BytesIO(), io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (512, 683, 3), dtype=np.uint8)).save(jpeg, 'JPEG')
    Image.fromarray(rng.integers(0, 151, (512, 683), dtype=np.uint8)).save(png, 'PNG')
    paths = [(osp.join(folder, f'{i}.jpg'), osp.join(folder, f'{i}.png')) for i in range(pairs)]
    for image, label in paths:
        with open(image, 'wb') as f:
            f.write(jpeg.getvalue())
        with open(label, 'wb') as f:
            f.write(png.getvalue())
    for pair in paths:  # warm
        check_label_map(*pair)
    start = time.perf_counter()
    for pair in paths:
        check_label_map(*pair)
    headers = time.perf_counter() - start
    start = time.perf_counter()
    for image, label in paths:
        os.stat(image), os.stat(label)
    stats = time.perf_counter() - start
    label_checks.LABEL_VALUES_CACHE = osp.join(folder, 'label_values.json')
    maps = [(label, os.stat(label)) for _, label in paths]
    start = time.perf_counter()
    check_label_values(maps, 150, reduce_zero_label=True)
    decode = time.perf_counter() - start
    start = time.perf_counter()
    check_label_values(maps, 150, reduce_zero_label=True)
    return dict(seconds=headers, stat_seconds=stats, values_seconds=decode, cached_seconds=time.perf_counter() - start)


def disk_bytes(fn: Callable[[str], Any], path: str) -> int:
    """Bytes ``fn(path)`` reads from the disk, ``path`` dropped from the page cache first."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)

    def read_bytes() -> int:
        with open('/proc/self/io') as f:
            return int(next(line for line in f if line.startswith('read_bytes:')).split()[1])

    before = read_bytes()
    fn(path)
    return read_bytes() - before


def checkpoint_cost(megabytes: int, folder: str) -> dict[str, int]:
    """Bytes read by a full load and by the index-only read of a checkpoint of about ``megabytes``."""
    path = osp.join(folder, 'epoch_1.pth')
    per_tensor = 2**20 // 4  # 1 MB float32 tensors, as many as the size asks: weights and optimizer state
    weights = {f'w{i}': torch.randn(per_tensor) for i in range(megabytes // 2)}
    state = {i: {'exp_avg': torch.randn(per_tensor)} for i in range(megabytes - megabytes // 2)}
    torch.save({'meta': {'epoch': 1}, 'state_dict': weights, 'optimizer': {'state': state, 'param_groups': []}}, path)
    return dict(
        size=osp.getsize(path),
        full=disk_bytes(load_file, path),
        index=disk_bytes(checkpoint_shapes, path),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--images', type=int, default=COCO_TRAIN_IMAGES, help='image entries to check')
    parser.add_argument('--checkpoint-mb', type=int, default=0, help='also measure a checkpoint of this size')
    parser.add_argument('--coco', action='store_true', help='also time check_coco_file on a train2017-sized file')
    parser.add_argument('--label-maps', type=int, default=0, help='also time check_label_map over this many pairs')
    args = parser.parse_args()
    if args.images:
        with tempfile.TemporaryDirectory() as folder:
            cost = image_check_cost(args.images, folder)
        print(
            f'check_image_files, {args.images} images (warm metadata cache): {cost["seconds"]:.2f} s, '
            f'{cost["stats"]} stat calls; of which walking the dataset entries: {cost["walk_seconds"]:.2f} s'
        )
    if args.coco:
        with tempfile.TemporaryDirectory(dir='.') as folder:
            cost = coco_check_cost(folder)
        print(
            f'check_coco_file, {COCO_TRAIN_IMAGES} images and {COCO_TRAIN_ANNOTATIONS} annotations '
            f'({cost["megabytes"]:.0f} MB, warm page cache): {cost["seconds"]:.2f} s; '
            f"pycocotools' COCO() on the same file: {cost['cocoapi_seconds']:.2f} s"
        )
    if args.label_maps:
        with tempfile.TemporaryDirectory(dir='.') as folder:
            cost = label_map_cost(folder, args.label_maps)
        print(
            f'check_label_map, {args.label_maps} image / label-map pairs (warm): {cost["seconds"]:.2f} s; '
            f'one stat per file instead: {cost["stat_seconds"]:.2f} s; check_label_values (decoding every map on '
            f'{os.cpu_count()} cores): {cost["values_seconds"]:.2f} s, '
            f'again from its cache: {cost["cached_seconds"]:.2f} s'
        )
    if args.checkpoint_mb:
        with tempfile.TemporaryDirectory(dir='.') as folder:  # on the disk, not a tmpfs
            cost = checkpoint_cost(args.checkpoint_mb, folder)
        size, full, index = cost['size'] / 2**20, cost['full'] / 2**20, cost['index'] / 2**10
        print(f'checkpoint of {size:.0f} MB: load_file reads {full:.1f} MB from disk, checkpoint_shapes {index:.0f} kB')


if __name__ == '__main__':
    run_tool(main)
