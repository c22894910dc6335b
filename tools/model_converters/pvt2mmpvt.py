"""Convert an official PVT, timm PVTv2, mmdet PVT or mmpvt checkpoint to mmpvt's key layout.

Usage: python tools/model_converters/pvt2mmpvt.py SRC DST [--force]

SRC may be an official ImageNet file (``pvt_small.pth``, ``pvt_v2_b2.pth``), timm's PVTv2 state
dict (``patch_embed``, ``stages.{i}.downsample``, ``stages.{i}.blocks``), a checkpoint of mmdet's
``PyramidVisionTransformer(V2)`` (a bare backbone, or a whole detector whose ``backbone.`` part is
converted while the neck and head keys are kept), or an mmpvt one.
Prints every key it renamed, dropped and kept. SRC is only read: DST must be another
file, and an existing DST is replaced only with ``--force``.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from mmpvt.checkpoint import extract_state_dict, load_file
from mmpvt.convert import ConversionReport, convert_with_report
from mmpvt.engine.fileio import write_atomically


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line: SRC, DST and ``--force``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('src', help='checkpoint to convert (only read)')
    parser.add_argument('dst', help='where to write the converted checkpoint')
    parser.add_argument('--force', action='store_true', help='replace DST if it exists (never SRC)')
    return parser.parse_args(argv)


def check_paths(src: str, dst: str, force: bool) -> None:
    """Raise ValueError if writing ``dst`` could destroy ``src`` or, without ``force``, another file."""
    if not os.path.isfile(src):
        raise ValueError(f'SRC {src} is not a file')
    if os.path.realpath(src) == os.path.realpath(dst) or (os.path.exists(dst) and os.path.samefile(src, dst)):
        raise ValueError(f'refusing to write over the source checkpoint {src}; choose another DST')
    if os.path.exists(dst) and not force:
        raise ValueError(f'DST {dst} exists; pass --force to replace it')


def converted_checkpoint(checkpoint: Any, source: str) -> tuple[dict[str, Any], ConversionReport]:
    """The checkpoint to save: bare if ``checkpoint`` was bare, else ``state_dict`` plus ``meta``."""
    try:
        converted, report = convert_with_report(extract_state_dict(checkpoint, source))
    except ValueError as err:
        raise ValueError(f'cannot convert {source}: {err}') from err
    if not any(isinstance(checkpoint.get(k), Mapping) for k in ('state_dict', 'model')):
        return converted, report
    meta = dict(checkpoint.get('meta') or {})
    meta.update(converted_by='mmpvt tools/model_converters/pvt2mmpvt.py', source_layout=report.layout)
    return {'meta': meta, 'state_dict': converted}, report


def save_atomically(obj: Any, dst: str) -> None:
    """``torch.save`` of ``obj`` to ``dst``, whole or not at all (mmpvt's one atomic writer: fsync, then rename)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomically(buffer.getvalue(), dst)


def print_report(report: ConversionReport, src: str, dst: str) -> None:
    """List what was renamed, dropped, resized and kept."""
    print(f'{src}: {report.layout} layout, PVT backbone under prefix {report.prefix!r}')
    for old, new in report.renamed:
        print(f'  mapped   {old} -> {new}')
    for key in report.dropped:
        print(f'  dropped  {key}')
    for key, old_shape, new_shape in report.resized:
        print(f'  resized  {key} {old_shape} -> {new_shape}')
    for key in report.kept:
        print(f'  kept     {key}')
    print(f'{len(report.renamed)} mapped, {len(report.dropped)} dropped, {len(report.kept)} kept; wrote {dst}')


def main(argv: Sequence[str] | None = None) -> int:
    """Run the tool; returns the exit status (0 on success, 1 with a message on error)."""
    args = parse_args(argv)
    try:
        check_paths(args.src, args.dst, args.force)
        checkpoint, report = converted_checkpoint(load_file(args.src), args.src)
        save_atomically(checkpoint, args.dst)
    except ValueError as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    print_report(report, args.src, args.dst)
    return 0


if __name__ == '__main__':
    sys.exit(main())
