"""The command lines of ``tools/train.py`` and ``tools/test.py`` (mmdet's flags, for mmdet and mmseg configs)."""

from __future__ import annotations

import argparse

from .cfg_options import CfgOptionsAction


def _common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--work-dir', help='directory for logs and checkpoints (default: ./work_dirs/CONFIG_NAME)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=CfgOptionsAction,
        help='override config settings, key=value pairs (e.g. train_cfg.max_epochs=2); values as in a config, '
        'dict(...) included: "visualizer.vis_backends=[dict(type=\'LocalVisBackend\')]"',
    )
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0, help=argparse.SUPPRESS)


def train_parser() -> argparse.ArgumentParser:
    """The arguments of ``tools/train.py`` (mmdet's)."""
    parser = argparse.ArgumentParser(description='Train a detector or a segmentor (mmdet or mmseg config)')
    parser.add_argument('config', help='config file')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision training')
    parser.add_argument(
        '--amp-dtype',
        choices=['float16', 'bfloat16'],
        default=None,
        help='the autocast dtype of --amp (implies --amp): float16 by default on a GPU; the CPU runs bfloat16 only',
    )
    parser.add_argument('--auto-scale-lr', action='store_true', help='scale the lr with the total batch size')
    parser.add_argument(
        '--resume',
        nargs='?',
        const='auto',
        help='resume from this checkpoint, or from the latest one of the work dir if no path is given',
    )
    _common_args(parser)
    return parser


def test_parser() -> argparse.ArgumentParser:
    """The arguments of ``tools/test.py`` (mmdet's)."""
    parser = argparse.ArgumentParser(description='Test a detector or a segmentor (mmdet or mmseg config)')
    parser.add_argument('config', help='config file')
    parser.add_argument('checkpoint', help='checkpoint file')
    parser.add_argument(
        '--out',
        help='detector (mmdet): dump the predictions to this pickle file (.pkl); '
        'segmentor (mmseg): save the predicted label maps as PNG files in this directory',
    )
    parser.add_argument(
        '--show-dir',
        help='draw every test image with its ground truth and predictions into this directory (a relative path is '
        'taken from the current directory): a detector (mmdet) writes SHOW_DIR/IMAGE_FILE_NAME (ground truth left, '
        'predictions right), a segmentor (mmseg) SHOW_DIR/vis_data/vis_image/test_IMAGE_FILE_NAME_0.png',
    )
    parser.add_argument(
        '--show',
        action='store_true',
        help='show each drawn test image in a window (needs a display), waiting --wait-time seconds',
    )
    parser.add_argument(
        '--wait-time', type=float, default=2.0, help='seconds each image stays shown with --show (default: 2)'
    )
    parser.add_argument(
        '--amp',
        action='store_true',
        help='mixed-precision inference: float16 autocast on a GPU; on a CPU the PVT backbone in bfloat16 and the '
        'neck and heads under bfloat16 autocast where the CPU has a bf16 matrix unit (AMX), fp32 elsewhere (the '
        'log says which)',
    )
    parser.add_argument(
        '--tta',
        action='store_true',
        help="test-time augmentation with the config's tta_model and tta_pipeline (for a detector without them: "
        "mmdet's horizontal-flip TTA, as mmdet's test.py does)",
    )
    _common_args(parser)
    return parser
