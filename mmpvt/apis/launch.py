"""What ``tools/train.py`` and ``tools/test.py`` share, for mmdet and mmseg configs alike.

The library is chosen by the config's ``default_scope`` (``mmdet`` or ``mmseg``);
the flags are mmdet's. Before a Runner is built the config is checked so that the
common mistakes fail with a message that says what to do: an unknown scope, a
missing checkpoint, a missing dataset (with its expected layout and the command
that writes toy data), a missing pretrained backbone file.
"""

from __future__ import annotations

import argparse
import copy
import importlib
import os.path as osp
from collections.abc import Iterator, Sequence
from typing import Any

from mmengine.config import Config, ConfigDict, DictAction
from mmengine.logging import print_log
from mmengine.runner import Runner, load_checkpoint

from ..checkpoint import allow_mmengine_checkpoints
from .amp import amp_optim_wrapper, check_amp_device
from .checks import (
    ConfigError,
    LabelValuesHook,
    check_cfg_options,
    check_checkpoint_fits,
    check_image_files,
    check_neck_channels,
    check_train_data,
    check_work_dir,
    checkpoint_shapes,
    explain_config_error,
    explain_failure,
)
from .distributed import RankMeanLossHook, distributed_run, on_rank_zero, prepare_cpu_distributed, set_local_rank
from .resume import Checkpoint, ResumableRandomnessHook, choose_resume_checkpoint, use_atomic_checkpoints

#: Supported ``default_scope`` values and the package each one needs.
SCOPES = {'mmdet': 'mmdet', 'mmseg': 'mmsegmentation'}

TOY_DATA_TOOL = 'tools/dataset_converters/make_toy_data.py'

#: dataset type -> (layout under data_root, argument of the toy-data tool)
DATASET_LAYOUTS = {
    'CocoDataset': (
        'annotations/instances_{train,val}2017.json, train2017/*.jpg and val2017/*.jpg (COCO 2017)',
        'coco',
    ),
    'ADE20KDataset': (
        'images/{training,validation}/*.jpg and annotations/{training,validation}/*.png (ADEChallengeData2016)',
        'ade',
    ),
}


def load_config(path: str, cfg_options: dict[str, Any] | None = None) -> Config:
    """Read a config, apply ``--cfg-options`` and check its ``default_scope``.

    Args:
        path: config file.
        cfg_options: overrides in mmengine's ``key=value`` form (already parsed).

    Returns:
        The config.

    Raises:
        ConfigError: missing file, missing or unsupported ``default_scope``, or the
            library of that scope is not installed.
    """
    if not osp.isfile(path):
        raise ConfigError(f'config file not found: {path}')
    try:
        cfg = Config.fromfile(path)
    except Exception as err:  # a syntax error, a missing _base_, any error the config's code raises
        raise explain_config_error(path, err) from err
    if cfg_options:
        check_cfg_options(cfg, cfg_options)
        cfg.merge_from_dict(cfg_options)
    check_neck_channels(cfg)
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        found = 'no default_scope' if scope is None else f'default_scope={scope!r}'
        raise ConfigError(
            f'{path} has {found}; expected default_scope = "mmdet" (detection) or "mmseg" '
            f'(segmentation), normally inherited from an mmdet:: or mmseg:: base config'
        )
    try:
        importlib.import_module(scope)
    except ImportError as err:
        raise ConfigError(
            f'{path} is an {scope} config but {scope} is not installed: pip install {SCOPES[scope]}'
        ) from err
    return cfg


def _datasets(cfg: Any) -> Iterator[dict[str, Any]]:
    """The leaf dataset configs inside wrappers (RepeatDataset, ConcatDataset...)."""
    if 'dataset' in cfg:
        yield from _datasets(cfg['dataset'])
    elif 'datasets' in cfg:
        for child in cfg['datasets']:
            yield from _datasets(child)
    else:
        yield cfg


def _toy_hint(dataset_type: str, data_root: str) -> str:
    if dataset_type not in DATASET_LAYOUTS:
        return ''
    layout, kind = DATASET_LAYOUTS[dataset_type]
    target = data_root.rstrip('/')
    if kind == 'ade' and osp.basename(target) == 'ADEChallengeData2016':
        target = osp.dirname(target)
    return (
        f'\nExpected layout under data_root: {layout}.'
        f'\nTo write a small synthetic dataset there: python {TOY_DATA_TOOL} {kind} {target}'
    )


def check_data(cfg: Config, loaders: Sequence[str]) -> None:
    """Check that the data root, annotation file and image folders of ``loaders`` exist.

    Raises:
        ConfigError: naming the missing path, the expected layout and the toy-data command.
    """
    for loader in loaders:
        if not cfg.get(loader):
            continue
        for dataset in _datasets(cfg[loader]):
            root = dataset.get('data_root') or ''
            paths = [root] if root else []
            if dataset.get('ann_file'):
                paths.append(osp.join(root, dataset['ann_file']))
            paths += [osp.join(root, p) for p in (dataset.get('data_prefix') or {}).values() if isinstance(p, str)]
            for path in paths:
                if not osp.exists(path):
                    raise ConfigError(
                        f'{loader}: {path} not found (dataset {dataset.get("type")}, data_root {root!r})'
                        + _toy_hint(str(dataset.get('type')), root)
                    )


def check_pretrained(cfg: Config) -> None:
    """Check that the backbone's ``Pretrained`` checkpoint file exists (URLs are not checked)."""
    init_cfg = cfg.model.get('backbone', {}).get('init_cfg')
    for item in init_cfg if isinstance(init_cfg, list) else [init_cfg] if init_cfg else []:
        path = item.get('checkpoint')
        if item.get('type') == 'Pretrained' and path and '://' not in path and not osp.isfile(path):
            raise ConfigError(
                f'backbone checkpoint {path} not found. Download the official ImageNet weights (see the README, '
                '"Training and testing"), or train from scratch with --cfg-options model.backbone.init_cfg=None'
            )


def _common_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--work-dir', help='directory for logs and checkpoints (default: ./work_dirs/CONFIG_NAME)')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override config settings, key=value pairs (e.g. train_cfg.max_epochs=2)',
    )
    parser.add_argument('--launcher', choices=['none', 'pytorch', 'slurm', 'mpi'], default='none')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0, help=argparse.SUPPRESS)


def train_parser() -> argparse.ArgumentParser:
    """The arguments of ``tools/train.py`` (mmdet's)."""
    parser = argparse.ArgumentParser(description='Train a detector or a segmentor (mmdet or mmseg config)')
    parser.add_argument('config', help='config file')
    parser.add_argument('--amp', action='store_true', help='automatic mixed precision training')
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
    parser.add_argument('--show-dir', help='draw the predictions and save the images under this directory')
    parser.add_argument(
        '--tta',
        action='store_true',
        help="test-time augmentation with the config's tta_model and tta_pipeline (for a detector without them: "
        "mmdet's horizontal-flip TTA, as mmdet's test.py does)",
    )
    _common_args(parser)
    return parser


def _setup(cfg: Config, args: argparse.Namespace) -> None:
    """Settings common to training and testing: launcher, work dir, LOCAL_RANK."""
    try:
        set_local_rank(args.launcher, args.local_rank)
    except ValueError as err:
        raise ConfigError(str(err)) from err
    cfg.launcher = args.launcher
    if args.work_dir:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir') is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])


def build_runner(cfg: Config) -> Runner:
    """Build the Runner (a custom one if the config has ``runner_type``), CPU-distributed if needed."""
    prepare_cpu_distributed(cfg, cfg.launcher)
    if isinstance(cfg.get('visualizer'), dict):
        # mmdet and mmseg name their visualizer 'visualizer': a second Runner in this process would get the
        # first one's instance back and log into the first run's work dir. Unnamed, the Runner names it
        # after its own run.
        cfg.visualizer.pop('name', None)
    if 'runner_type' in cfg:
        from mmengine.registry import RUNNERS

        runner = RUNNERS.build(cfg)
    else:
        runner = Runner.from_cfg(cfg)
    if cfg.launcher != 'none':
        runner.register_hook(RankMeanLossHook())
    runner.register_hook(ResumableRandomnessHook())
    return runner


def train_config(args: argparse.Namespace) -> Config:
    """The checked training config for parsed ``train_parser()`` arguments."""
    cfg = load_config(args.config, args.cfg_options)
    _setup(cfg, args)
    if args.amp:
        amp_optim_wrapper(cfg.optim_wrapper)
    check_amp_device(cfg.optim_wrapper)
    if args.auto_scale_lr:
        if not {'enable', 'base_batch_size'} <= set(cfg.get('auto_scale_lr') or {}):
            raise ConfigError(
                f'{args.config} has no auto_scale_lr = dict(enable=..., base_batch_size=...): '
                'cannot use --auto-scale-lr'
            )
        cfg.auto_scale_lr.enable = True
    if args.resume == 'auto':
        cfg.resume, cfg.load_from = True, None
    elif args.resume is not None:
        if not osp.isfile(args.resume):
            raise ConfigError(f'--resume: checkpoint file not found: {args.resume}')
        cfg.resume, cfg.load_from = True, args.resume
    else:
        check_work_dir(cfg.work_dir)
    check_pretrained(cfg)
    check_data(cfg, ['train_dataloader', 'val_dataloader'])
    use_atomic_checkpoints(cfg)
    return cfg


def check_resume(cfg: Config, resume: str | None) -> Checkpoint | None:
    """Pick the readable checkpoint ``--resume`` continues from, on rank 0 for every rank; set ``cfg`` to it.

    ``--resume`` (auto) continues from :func:`~mmpvt.apis.resume.readable_checkpoint`
    (nothing to resume in a work dir without checkpoints); ``--resume PATH`` must name a
    readable checkpoint. Call it once the process group is up (inside :func:`distributed_run`).

    Returns:
        The checkpoint with its tensors' shapes, or None.

    Raises:
        ConfigError: the checkpoint is unreadable, or none of the work dir's is readable.
    """
    if resume is None:
        return None
    chosen = choose_resume_checkpoint(cfg.work_dir, resume)
    cfg.load_from = chosen.path if chosen else None
    cfg.resume = chosen is not None
    return chosen


def validation_metrics(runner: Runner) -> dict[str, float]:
    """The last validation metrics a Runner recorded (``{'coco/bbox_mAP': ...}``)."""
    scalars = runner.message_hub.log_scalars
    timings = ('val/time', 'val/data_time')
    return {
        key[len('val/') :]: float(buf.current())
        for key, buf in scalars.items()
        if key.startswith('val/') and key not in timings
    }


def train(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Entry point of ``tools/train.py``; returns the last validation metrics."""
    allow_mmengine_checkpoints()
    args = train_parser().parse_args(argv)
    cfg = train_config(args)
    with distributed_run(cfg):
        return _train(cfg, args.resume)


def _train(cfg: Config, resume: str | None) -> dict[str, float]:
    chosen = check_resume(cfg, resume)
    runner = build_runner(cfg)
    if chosen is not None:
        check_checkpoint_fits(runner.model, chosen.path, shapes=chosen.shapes)
    check_train_data(runner)
    check_image_files(runner)
    runner.register_hook(LabelValuesHook())  # label-map values, checked batch by batch
    try:
        runner.train()
    except Exception as err:  # a corrupt image, a pretrained file of another model: named by explain_failure
        explained = explain_failure(cfg, err, ('train_dataloader', 'val_dataloader'))
        if explained is None:
            raise
        raise explained from err
    metrics = validation_metrics(runner)
    if metrics:
        summary = ', '.join(f'{k}={v:.4g}' for k, v in metrics.items())
        print_log(f'final validation metrics: {summary}', logger='current')
    return metrics


def _enable_drawing(cfg: Config, show_dir: str) -> None:
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise ConfigError('--show-dir needs default_hooks.visualization in the config')
    hook['draw'] = True
    if cfg.default_scope == 'mmdet':
        hook['test_out_dir'] = show_dir
    else:
        hook['interval'] = 1
        cfg.visualizer['save_dir'] = show_dir


def _set_out(cfg: Config, out: str) -> None:
    """``--out`` as mmdet's and mmseg's test.py take it: a .pkl of predictions, or a directory of label PNGs."""
    if cfg.default_scope == 'mmdet':
        if not out.endswith(('.pkl', '.pickle')):
            raise ConfigError(f'--out must name a .pkl file for a detector (mmdet config), got {out}')
        return  # DumpDetResults joins the evaluator once the runner exists (_test)
    if osp.isfile(out):
        raise ConfigError(f'--out names the directory for the predicted label maps (mmseg config); {out} is a file')
    cfg.test_evaluator['output_dir'] = out


#: mmdet's test.py defaults for --tta when a detector config has no tta_model / tta_pipeline.
DET_TTA_MODEL = dict(type='DetTTAModel', tta_cfg=dict(nms=dict(type='nms', iou_threshold=0.5), max_per_img=100))
DET_FLIP_TTA = dict(
    type='TestTimeAug',
    transforms=[
        [dict(type='RandomFlip', prob=1.0), dict(type='RandomFlip', prob=0.0)],
        [
            dict(
                type='PackDetInputs',
                meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor', 'flip', 'flip_direction'),
            )
        ],
    ],
)


def _enable_tta(cfg: Config) -> None:
    """Wrap the model in the config's TTA model and test with its TTA pipeline (mmdet's/mmseg's ``--tta``)."""
    if cfg.default_scope == 'mmdet':
        if 'tta_model' not in cfg:
            print_log('--tta: the config has no tta_model; using DetTTAModel (NMS 0.5)', logger='current', level=30)
            cfg.tta_model = copy.deepcopy(DET_TTA_MODEL)
        if 'tta_pipeline' not in cfg:
            print_log('--tta: the config has no tta_pipeline; flipping the test pipeline', logger='current', level=30)
            dataset = cfg.test_dataloader.dataset
            while 'dataset' in dataset:
                dataset = dataset['dataset']
            cfg.tta_pipeline = [*copy.deepcopy(dataset.pipeline[:-1]), copy.deepcopy(DET_FLIP_TTA)]
    else:
        missing = [key for key in ('tta_model', 'tta_pipeline') if key not in cfg]
        if missing:
            raise ConfigError(f'--tta needs {" and ".join(missing)} in the config (mmseg configs get them from _base_)')
    cfg.model = ConfigDict(**cfg.tta_model, module=cfg.model)
    cfg.test_dataloader.dataset.pipeline = cfg.tta_pipeline


def test_config(args: argparse.Namespace) -> Config:
    """The checked test config for parsed ``test_parser()`` arguments."""
    cfg = load_config(args.config, args.cfg_options)
    _setup(cfg, args)
    if not osp.isfile(args.checkpoint):
        raise ConfigError(f'checkpoint file not found: {args.checkpoint}')
    if args.out:
        _set_out(cfg, args.out)
    # Under --tta _test loads the checkpoint into the wrapped model: mmengine would load it into the
    # TTA model, whose keys all start with 'module.'.
    cfg.load_from = None if args.tta else args.checkpoint
    if args.show_dir:
        _enable_drawing(cfg, args.show_dir)
    if args.tta:
        _enable_tta(cfg)
    check_data(cfg, ['test_dataloader'])
    return cfg


def test(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Entry point of ``tools/test.py``; returns the test metrics."""
    allow_mmengine_checkpoints()
    args = test_parser().parse_args(argv)
    cfg = test_config(args)
    with distributed_run(cfg):
        return _test(cfg, args)


def _test(cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    runner = build_runner(cfg)
    model = runner.model.module if args.tta else runner.model  # a TTA model holds the detector as .module
    check_checkpoint_fits(model, args.checkpoint, shapes=on_rank_zero(checkpoint_shapes, args.checkpoint))
    if args.tta:
        load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True)
    if args.out and cfg.default_scope == 'mmdet':  # mmseg's --out went into the IoU metric (_set_out)
        from mmdet.evaluation import DumpDetResults

        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
    runner.register_hook(LabelValuesHook())
    try:
        return runner.test()
    except Exception as err:  # a corrupt image, a broken annotation file: named by explain_failure
        explained = explain_failure(cfg, err, ('test_dataloader',))
        if explained is None:
            raise
        raise explained from err
