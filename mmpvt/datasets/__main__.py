"""Write a small deterministic synthetic dataset in the COCO or ADE20K layout: ``python -m mmpvt.datasets``.

Usage: python -m mmpvt.datasets {coco,ade} ROOT [--num-train N] [--num-val N] [--size PX] [--seed S] [--force]

``coco`` writes ROOT/{train2017,val2017}/*.jpg and ROOT/annotations/instances_*.json
(four shape classes, boxes and polygon masks); ``ade`` writes
ROOT/ADEChallengeData2016/{images,annotations}/{training,validation}/ (ADE20K's
150-class label space, 0 = ignored). An existing ROOT is kept unless --force is given;
the data are written to a temporary sibling first, so an interrupted run leaves nothing.
It works from an installed wheel as from a checkout (``tools/dataset_converters/make_toy_data.py`` runs it).
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from .toy import make_toy_ade, make_toy_coco

MAKERS = {'coco': make_toy_coco, 'ade': make_toy_ade}


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments and write the dataset unless it is already there."""
    parser = argparse.ArgumentParser(
        prog='python -m mmpvt.datasets',
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument('kind', choices=sorted(MAKERS), help='the layout: COCO 2017 or ADEChallengeData2016')
    parser.add_argument('root', type=Path, help='folder to write (kept if it exists, unless --force)')
    parser.add_argument('--num-train', type=int, default=400, help='training images')
    parser.add_argument('--num-val', type=int, default=100, help='validation images')
    parser.add_argument('--size', type=int, default=128, help='image side in pixels')
    parser.add_argument('--seed', type=int, default=0, help='the data depend on nothing else')
    parser.add_argument('--force', action='store_true', help='rewrite an existing ROOT')
    args = parser.parse_args(argv)
    if args.root.exists() and not args.force:
        print(f'{args.root} exists, kept (use --force to rewrite it)')
        return
    tmp = args.root.with_name(args.root.name + '.tmp')
    shutil.rmtree(tmp, ignore_errors=True)
    MAKERS[args.kind](tmp, num_train=args.num_train, num_val=args.num_val, size=args.size, seed=args.seed)
    shutil.rmtree(args.root, ignore_errors=True)
    tmp.rename(args.root)
    print(f'wrote toy {args.kind} data ({args.num_train} train / {args.num_val} val images) to {args.root}')


if __name__ == '__main__':
    main()
