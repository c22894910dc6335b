"""Label maps of a segmentation set: their headers against their images, and their values against the head.

* :func:`check_label_map`: a label map is an 8-bit single-channel image of its image's size (headers only).
* :func:`check_label_values`: every value of every label map is a class of the head or the ignore index,
  before the first iteration. It decodes each map once (:data:`LABEL_VALUES_CACHE` remembers the values
  a set of unchanged maps holds, so a later run on the same data only compares).
* :func:`check_seg_labels`: the same comparison on a batch, for the sets not scanned up front.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import os.path as osp
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from mmengine.model import is_model_wrapper
from PIL import Image, UnidentifiedImageError
from torch import nn

from . import ConfigError

#: PIL modes of a label map that mmseg reads as one 8-bit class index per pixel.
LABEL_MODES = ('L', 'P')

#: EXIF orientations for which OpenCV transposes a JPEG on decoding (its header size is then W×H swapped).
TRANSPOSING_ORIENTATIONS = (5, 6, 7, 8)


def _decoded_size(image: Image.Image) -> tuple[int, int]:
    """(W, H) of an image as OpenCV decodes it: EXIF rotations by 90° swap the header's size."""
    orientation = image.getexif().get(0x0112) if image.format == 'JPEG' else None
    return image.size[::-1] if orientation in TRANSPOSING_ORIENTATIONS else image.size


def check_label_map(img_path: str, seg_map_path: str) -> None:
    """Check a label map against its image from the two files' headers (no pixel is decoded).

    Raises:
        ConfigError: a file that is no image, a label map that is not 8-bit single-channel
            (mode L or P), or one of another size than its image.
    """
    try:
        with Image.open(img_path) as image, Image.open(seg_map_path) as label:
            size, label_size, mode = _decoded_size(image), label.size, label.mode
    except (UnidentifiedImageError, OSError) as err:
        name = getattr(err, 'filename', None) or (seg_map_path if seg_map_path in str(err) else img_path)
        raise ConfigError(
            f'cannot decode image {name}: the file is corrupt or not an image; expected a JPEG or PNG '
            '(replace it or remove it from the dataset)'
        ) from err
    if mode not in LABEL_MODES:
        raise ConfigError(
            f'label map {seg_map_path} is a {mode} image; expected an 8-bit single-channel PNG (mode L or P) holding '
            'one class index per pixel, not a colour picture: convert it (e.g. the palette index of each colour)'
        )
    if label_size != size:
        raise ConfigError(
            f'label map {seg_map_path} is {label_size[0]}×{label_size[1]} pixels but its image {img_path} is '
            f'{size[0]}×{size[1]}; expected the same size (was it exported at another resolution?)'
        )


def check_seg_labels(model: nn.Module, data_batch: Any) -> None:
    """Refuse a batch whose label maps hold a value that is neither a class nor the ignore index.

    Cheap (a comparison over the batch's labels): the backstop of :func:`check_label_values` for the sets it
    does not scan (test sets, datasets with a ``label_map``). Values are reported as they are in the file
    (before ``reduce_zero_label`` subtracted one).

    Raises:
        ConfigError: naming the label map, the values and the valid range.
    """
    classes = head_classes(model)
    samples = data_batch.get('data_samples') if isinstance(data_batch, Mapping) else None
    if classes is None or not samples:
        return
    num_classes, ignore = classes
    for sample in samples:
        labels = getattr(getattr(sample, 'gt_sem_seg', None), 'data', None)
        if labels is None:
            continue
        bad = (labels >= num_classes) & (labels != ignore)
        if bool(bad.any()):
            reduced = bool(sample.metainfo.get('reduce_zero_label'))
            values = sorted({int(v) + reduced for v in labels[bad].unique()})
            raise ConfigError(
                f'label map {sample.metainfo.get("seg_map_path")} holds value(s) {values[:10]} in {int(bad.sum())} '
                f'pixel(s); {expected_values(num_classes, ignore, reduced)}'
            )


def expected_values(num_classes: int, ignore: int, reduce_zero_label: bool) -> str:
    """What a label map may hold, as values in the file, and what to change when it holds more."""
    valid = f'0 (other, ignored), 1..{num_classes}' if reduce_zero_label else f'0..{num_classes - 1}'
    return (
        f'expected {valid} (the {num_classes} classes of the head) or {ignore} (ignored). If the values are '
        f"right, the head is too small for the data: set model.decode_head.num_classes (and auxiliary_head's) to "
        'the number of classes and metainfo.classes to their names'
    )


def is_valid_value(value: int, num_classes: int, ignore: int, reduce_zero_label: bool) -> bool:
    """Whether a label-map value (as in the file) becomes a class or the ignore index, as mmseg loads it.

    With ``reduce_zero_label`` mmseg maps 0 to 255, subtracts one from the others and keeps 255 (254 + 1) at 255.
    """
    if reduce_zero_label:
        value = 255 if value in (0, 255) else value - 1
    return value < num_classes or value == ignore


def label_values(path: str) -> list[int]:
    """The values an 8-bit label map holds (decodes the file)."""
    with Image.open(path) as label:
        counts = label.histogram()[:256]
    return [value for value, count in enumerate(counts) if count]


#: Where :func:`check_label_values` remembers the values of a set of label maps, by their paths, sizes and times.
LABEL_VALUES_CACHE = osp.join(
    os.environ.get('XDG_CACHE_HOME') or osp.expanduser('~/.cache'), 'mmpvt', 'label_values.json'
)


def _read_cache() -> dict[str, Any]:
    try:
        with open(LABEL_VALUES_CACHE) as f:
            cache = json.load(f)
        return cache if isinstance(cache, dict) else {}
    except (OSError, ValueError):
        return {}


def check_label_values(
    label_maps: Sequence[tuple[str, os.stat_result]],
    num_classes: int,
    *,
    ignore: int = 255,
    reduce_zero_label: bool = False,
    split: str = 'training',
) -> None:
    """Refuse label maps holding a value that is neither a class of the head nor the ignore index.

    Every map is decoded once (on as many threads as there are cores: about 1.7 ms per 683×512 map on our
    2-core machine, so ADE20K's 22,210 maps take about 20-40 s the first time). The union of the values
    found is remembered in :data:`LABEL_VALUES_CACHE` under a digest of the maps' paths, sizes and
    modification times: a later run on unchanged maps only compares that union with the head.

    Args:
        label_maps: each label map's path and ``os.stat`` result (the existence check's).
        num_classes: the decode head's number of classes.
        ignore: the head's ignore index.
        reduce_zero_label: whether the dataset reduces the zero label (values are given as in the files).
        split: the set's name, for the message.

    Raises:
        ConfigError: naming the label maps (first few), the values and the valid range.
    """
    if not label_maps:
        return
    digest = hashlib.sha256()
    for path, status in sorted(label_maps):
        digest.update(f'{osp.realpath(path)}:{status.st_size}:{status.st_mtime_ns}\n'.encode())
    key = digest.hexdigest()
    cache = _read_cache()
    remembered = cache.get(key)
    valid = functools.partial(
        is_valid_value, num_classes=num_classes, ignore=ignore, reduce_zero_label=reduce_zero_label
    )
    if isinstance(remembered, list) and all(valid(v) for v in remembered):
        return  # the same maps as a run before, holding only valid values
    paths = [path for path, _ in label_maps]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        found = list(pool.map(label_values, paths))
    wrong_values = [(path, [v for v in held if not valid(v)]) for path, held in zip(paths, found)]
    bad = [(path, wrong) for path, wrong in wrong_values if wrong]
    union = sorted({v for held in found for v in held})
    # Imported here: mmpvt.engine's hooks import these checks, so a module-level import would be a cycle.
    from ..engine.fileio import write_atomically

    try:
        latest = dict(list({**cache, key: union}.items())[-50:])
        write_atomically(json.dumps(latest).encode(), LABEL_VALUES_CACHE)
    except OSError:
        pass  # only a cache: the next run decodes again
    if bad:
        listing = '; '.join(f'{path}: {wrong[:10]}' for path, wrong in bad[:3])
        more = f' (and {len(bad) - 3} more)' if len(bad) > 3 else ''
        raise ConfigError(
            f'{len(bad)} label map(s) of the {split} set hold values that are no class: {listing}{more}; '
            f'{expected_values(num_classes, ignore, reduce_zero_label)}'
        )


def head_classes(model: nn.Module) -> tuple[int, int] | None:
    """(num_classes, ignore_index) of a segmentor's decode head, or None for a model without one."""
    head = getattr(model.module if is_model_wrapper(model) else model, 'decode_head', None)
    num_classes = getattr(head, 'num_classes', None)
    return (num_classes, int(getattr(head, 'ignore_index', 255))) if isinstance(num_classes, int) else None
