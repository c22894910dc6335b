"""Small deterministic synthetic datasets in the real COCO and ADE20K layouts.

Every image is a noisy grey background with a few filled shapes; each class has its
own shape and colour, so a detector or a segmenter can learn them in minutes on a CPU.
The same seed gives byte-identical files.

COCO layout (``make_toy_coco``)::

    ROOT/train2017/*.jpg  ROOT/val2017/*.jpg
    ROOT/annotations/instances_{train,val}2017.json   boxes and polygon masks

ADE20K layout (``make_toy_ade``)::

    ROOT/ADEChallengeData2016/images/{training,validation}/*.jpg
    ROOT/ADEChallengeData2016/annotations/{training,validation}/*.png

ADE labels use ADE20K's 150-class space with reduce-zero-label semantics: 0 is
"other" (ignored; here a one-pixel outline around each shape), 1..150 are classes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

#: Toy detection classes: (name, shape, RGB colour).
COCO_CLASSES: tuple[tuple[str, str, tuple[int, int, int]], ...] = (
    ('circle', 'circle', (220, 40, 40)),
    ('square', 'square', (40, 180, 60)),
    ('triangle', 'triangle', (40, 80, 220)),
    ('star', 'star', (230, 200, 30)),
)

#: Toy segmentation classes: (ADE20K label 1..150, shape, RGB colour). The
#: background is label 1 ("wall"); the shapes are building, sky, floor and tree.
ADE_BACKGROUND = 1
ADE_CLASSES: tuple[tuple[int, str, tuple[int, int, int]], ...] = (
    (2, 'circle', (220, 40, 40)),
    (3, 'square', (40, 180, 60)),
    (4, 'triangle', (40, 80, 220)),
    (5, 'star', (230, 200, 30)),
)

COCO_SPLITS = {'train': 'train2017', 'val': 'val2017'}
ADE_SPLITS = {'train': 'training', 'val': 'validation'}


def shape_polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of ``shape`` centred at (cx, cy) with circumradius ``r``, rotated by ``angle``."""
    if shape == 'circle':
        angles = [angle + 2 * math.pi * k / 24 for k in range(24)]
        radii = [r] * 24
    elif shape == 'square':
        angles = [angle + math.pi / 4 + math.pi / 2 * k for k in range(4)]
        radii = [r] * 4
    elif shape == 'triangle':
        angles = [angle - math.pi / 2 + 2 * math.pi / 3 * k for k in range(3)]
        radii = [r] * 3
    elif shape == 'star':
        angles = [angle - math.pi / 2 + math.pi / 5 * k for k in range(10)]
        radii = [r if k % 2 == 0 else 0.45 * r for k in range(10)]
    else:
        raise ValueError(f'unknown shape {shape!r}')
    return [(cx + rad * math.cos(a), cy + rad * math.sin(a)) for a, rad in zip(angles, radii)]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    grey = rng.integers(90, 170)
    noise = rng.normal(0, 12, (size, size, 3))
    return np.clip(grey + noise, 0, 255).astype(np.uint8)


def _place(
    rng: np.random.Generator,
    size: int,
    count: int,
    min_r: float,
    max_r: float,
) -> list[tuple[float, float, float]]:
    """Up to ``count`` non-overlapping discs (cx, cy, r) inside the image."""
    discs: list[tuple[float, float, float]] = []
    for _ in range(count * 20):
        if len(discs) == count:
            break
        r = rng.uniform(min_r, max_r)
        cx, cy = rng.uniform(r, size - r, 2)
        if all(math.hypot(cx - x, cy - y) > r + q + 2 for x, y, q in discs):
            discs.append((cx, cy, r))
    return discs


def _draw_scene(
    rng: np.random.Generator,
    size: int,
    classes: Sequence[tuple[Any, str, tuple[int, int, int]]],
    max_objects: int,
) -> tuple[Image.Image, list[tuple[int, list[tuple[float, float]]]]]:
    """A background with 1..max_objects shapes; returns the image and (class index, polygon) pairs."""
    image = Image.fromarray(_background(rng, size))
    draw = ImageDraw.Draw(image)
    objects = []
    for cx, cy, r in _place(rng, size, int(rng.integers(1, max_objects + 1)), size * 0.09, size * 0.24):
        index = int(rng.integers(len(classes)))
        _, shape, colour = classes[index]
        polygon = shape_polygon(shape, cx, cy, r, rng.uniform(0, 2 * math.pi))
        jitter = rng.integers(-20, 21, 3)
        draw.polygon(polygon, fill=tuple(int(np.clip(c + j, 0, 255)) for c, j in zip(colour, jitter)))
        objects.append((index, polygon))
    return image, objects


def _polygon_area(polygon: Sequence[tuple[float, float]]) -> float:
    xs, ys = np.array(polygon).T
    return float(abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))) / 2)


def _coco_annotation(ann_id: int, image_id: int, category_id: int, polygon: list[tuple[float, float]]) -> dict:
    xs, ys = np.array(polygon).T
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max(), ys.max()
    return dict(
        id=ann_id,
        image_id=image_id,
        category_id=category_id,
        bbox=[round(float(v), 2) for v in (x0, y0, x1 - x0, y1 - y0)],
        area=round(_polygon_area(polygon), 2),
        segmentation=[[round(float(v), 2) for point in polygon for v in point]],
        iscrowd=0,
    )


def make_toy_coco(
    root: str | Path,
    *,
    num_train: int = 400,
    num_val: int = 100,
    size: int = 128,
    max_objects: int = 3,
    seed: int = 0,
) -> Path:
    """Write a toy COCO dataset (4 classes, boxes and polygon masks) under ``root``.

    Args:
        root: dataset directory, created if needed.
        num_train: number of training images.
        num_val: number of validation images.
        size: side of the square images in pixels.
        max_objects: each image holds 1..max_objects non-overlapping shapes.
        seed: the data depend on nothing else.

    Returns:
        ``root`` as a Path.
    """
    root = Path(root)
    categories = [dict(id=i + 1, name=name, supercategory='shape') for i, (name, _, _) in enumerate(COCO_CLASSES)]
    (root / 'annotations').mkdir(parents=True, exist_ok=True)
    for split, count in (('train', num_train), ('val', num_val)):
        rng = np.random.default_rng([seed, 0 if split == 'train' else 1])
        folder = root / COCO_SPLITS[split]
        folder.mkdir(exist_ok=True)
        images, annotations = [], []
        for image_id in range(1, count + 1):
            image, objects = _draw_scene(rng, size, COCO_CLASSES, max_objects)
            file_name = f'{image_id:012d}.jpg'
            image.save(folder / file_name, quality=95)
            images.append(dict(id=image_id, file_name=file_name, height=size, width=size))
            for index, polygon in objects:
                annotations.append(_coco_annotation(len(annotations) + 1, image_id, index + 1, polygon))
        content = dict(images=images, annotations=annotations, categories=categories)
        (root / 'annotations' / f'instances_{COCO_SPLITS[split]}.json').write_text(json.dumps(content))
    return root


def make_toy_ade(
    root: str | Path,
    *,
    num_train: int = 400,
    num_val: int = 100,
    size: int = 128,
    max_objects: int = 3,
    seed: int = 0,
) -> Path:
    """Write a toy ADE20K dataset (background "wall" and four shape classes) under ``root``.

    Args:
        root: directory that receives ``ADEChallengeData2016/``.
        num_train: number of training images.
        num_val: number of validation images.
        size: side of the square images in pixels.
        max_objects: each image holds 1..max_objects non-overlapping shapes.
        seed: the data depend on nothing else.

    Returns:
        ``root`` as a Path.
    """
    root = Path(root)
    base = root / 'ADEChallengeData2016'
    for split, count in (('train', num_train), ('val', num_val)):
        rng = np.random.default_rng([seed, 2 if split == 'train' else 3])
        image_dir = base / 'images' / ADE_SPLITS[split]
        label_dir = base / 'annotations' / ADE_SPLITS[split]
        image_dir.mkdir(parents=True, exist_ok=True)
        label_dir.mkdir(parents=True, exist_ok=True)
        for index in range(1, count + 1):
            image, objects = _draw_scene(rng, size, ADE_CLASSES, max_objects)
            label = Image.new('L', (size, size), ADE_BACKGROUND)
            draw = ImageDraw.Draw(label)
            for class_index, polygon in objects:
                draw.polygon(polygon, fill=ADE_CLASSES[class_index][0], outline=0)
            name = f'ADE_{"train" if split == "train" else "val"}_{index:08d}'
            image.save(image_dir / f'{name}.jpg', quality=95)
            label.save(label_dir / f'{name}.png')
    return root
