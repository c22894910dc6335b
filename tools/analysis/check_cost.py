"""What the start-up checks cost: check_image_files on COCO train2017's 118,287 images, checkpoint reads.

Image check: N empty image files in a temporary folder and a dataset of N entries (serialised
like mmdet's, so ``get_data_info`` unpickles each entry as in a real run); times
``check_image_files`` warm (the file system's metadata cached, as after a first pass) and
counts the ``stat`` calls. On a network file system (Lustre, NFS) each ``stat`` is a
metadata request: multiply the count by its latency there.

Checkpoint reads (``--checkpoint-mb``): the bytes a resume's checks read from the disk for one
checkpoint, the file dropped from the page cache first (/proc/self/io ``read_bytes``):
:func:`~mmpvt.checkpoint.load_file` (what each check did before) against
:func:`~mmpvt.apis.checks.checkpoint_shapes` (memory-mapped: the index only).

    python tools/analysis/check_cost.py                   # 118287 images
    python tools/analysis/check_cost.py --images 5000 --checkpoint-mb 150
"""

from __future__ import annotations

import argparse
import os
import os.path as osp
import tempfile
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import torch
from mmengine.config import Config
from mmengine.dataset import BaseDataset

from mmpvt.apis import checks
from mmpvt.apis.checks import check_image_files, checkpoint_shapes
from mmpvt.checkpoint import load_file

COCO_TRAIN_IMAGES = 118_287


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
        open(path, 'wb').close()
    dataset = ImageList(paths)
    runner = SimpleNamespace(train_loop=SimpleNamespace(dataloader=SimpleNamespace(dataset=dataset)), cfg=Config())
    stats = 0
    isfile = checks.osp.isfile

    def counting_isfile(path: str) -> bool:
        nonlocal stats
        stats += 1
        return isfile(path)

    check_image_files(runner)  # first pass: fills the metadata cache
    checks.osp.isfile = counting_isfile
    try:
        start = time.perf_counter()
        check_image_files(runner)
        seconds = time.perf_counter() - start
    finally:
        checks.osp.isfile = isfile
    start = time.perf_counter()
    for i in range(len(dataset)):
        dataset.get_data_info(i)
    walk = time.perf_counter() - start
    return dict(seconds=seconds, stats=stats, walk_seconds=walk)


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
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        cost = image_check_cost(args.images, folder)
    print(
        f'check_image_files, {args.images} images (warm metadata cache): {cost["seconds"]:.2f} s, '
        f'{cost["stats"]} stat calls; of which walking the dataset entries: {cost["walk_seconds"]:.2f} s'
    )
    if args.checkpoint_mb:
        with tempfile.TemporaryDirectory(dir='.') as folder:  # on the disk, not a tmpfs
            cost = checkpoint_cost(args.checkpoint_mb, folder)
        size, full, index = cost['size'] / 2**20, cost['full'] / 2**20, cost['index'] / 2**10
        print(f'checkpoint of {size:.0f} MB: load_file reads {full:.1f} MB from disk, checkpoint_shapes {index:.0f} kB')


if __name__ == '__main__':
    main()
