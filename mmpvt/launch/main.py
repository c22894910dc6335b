"""``train()`` and ``test()``: what ``tools/train.py`` and ``tools/test.py`` run, for mmdet and mmseg configs.

The library is chosen by the config's ``default_scope`` (``mmdet`` or ``mmseg``); the flags are
mmdet's (:mod:`.args`). Before a Runner is built the config is checked (:mod:`.config_checks`,
:mod:`.data_checks`) so that the common mistakes fail with a message that says what to do; the
checks that need the Runner's datasets and model run before ``runner.train()``/``runner.test()``.
The Runner gets the atomic checkpoint backend, the label-value check, the CPU fast paths, the stop on a signal,
the non-finite guard and, in distributed runs, the rank-mean loss log and rank 0's test-metrics JSON;
reproducible resumes are the config's choice (``ResumableRandomnessHook``).
"""

from __future__ import annotations

import argparse
import copy
import os
import os.path as osp
import sys
from collections.abc import Sequence
from typing import Any

from mmengine.config import Config, ConfigDict
from mmengine.hooks import Hook, LoggerHook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS
from mmengine.runner import Runner, load_checkpoint

from ..checkpoint import allow_mmengine_checkpoints, missing_checkpoint
from ..datasets.wrappers import leaf_datasets
from ..engine.hooks import (
    CpuFastPathsHook,
    LabelValuesHook,
    NonFiniteGuardHook,
    RankMeanLossHook,
    RankZeroLoggerHook,
    StopOnSignalHook,
)
from . import ConfigError
from .args import test_parser, train_parser
from .checkpoints import check_checkpoint_fits, check_load_from, checkpoint_shapes, local_load_from
from .class_checks import check_num_classes
from .coco_checks import check_annotation_files
from .config_checks import amp_inference, amp_optim_wrapper, check_amp_device, check_pretrained, load_config
from .data_checks import check_data, check_image_files, check_train_data, explain_failure
from .distributed import distributed_run, on_rank_zero, prepare_cpu_distributed, set_local_rank
from .resume import check_work_dir, resume_from

__all__ = ['ConfigError', 'build_runner', 'test', 'test_config', 'test_parser', 'train', 'train_config', 'train_parser']


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
    if cfg.launcher != 'none':
        _add_once(cfg, RankMeanLossHook)
        rank_zero_test_json(cfg)
    _add_once(cfg, LabelValuesHook)  # label-map values, checked batch by batch
    _add_once(cfg, CpuFastPathsHook)  # the patch-conv GEMM in training, all shortcuts in testing
    _add_once(cfg, StopOnSignalHook)  # SIGTERM/SIGINT/SIGUSR1: checkpoint, then exit 75
    _add_once(cfg, NonFiniteGuardHook)  # no non-finite step, no non-finite checkpoint
    if 'runner_type' in cfg:
        from mmengine.registry import RUNNERS

        runner = RUNNERS.build(cfg)
    else:
        runner = Runner.from_cfg(cfg)
    return runner


def _add_once(cfg: Config, hook: type[Hook]) -> None:
    """Add ``hook`` to ``custom_hooks`` unless the config names one of its kind (``EarlyChecksHook`` is a
    ``LabelValuesHook``): mmengine keeps duplicates, and a second copy would repeat its work on every iteration.

    Through the config, not ``register_hook`` after the build: the Runner's table of hooks then lists it.
    """
    hooks = list(cfg.get('custom_hooks') or [])
    if any(issubclass(_hook_class(named), hook) for named in hooks):
        return
    cfg.custom_hooks = [*hooks, dict(type=hook.__name__)]


def _hook_class(named: Any) -> type:
    """The class a config's hook entry builds: ``dict(type='Name')`` by the registry, ``dict(type=Class)``, an
    instance's class (``object`` for a name the registry does not know)."""
    if isinstance(named, dict):
        kind = HOOKS.get(named.get('type')) if isinstance(named.get('type'), str) else named.get('type')
        return kind if isinstance(kind, type) else object
    return type(named)


def rank_zero_test_json(cfg: Config) -> None:
    """Swap the config's stock ``LoggerHook`` for ``RankZeroLoggerHook``: one rank writes the test metrics' JSON.

    A config's own logger hook (a subclass, another hook) is left as it is.
    """
    logger = (cfg.get('default_hooks') or {}).get('logger')
    if isinstance(logger, dict) and _hook_class(logger) is LoggerHook:
        logger['type'] = RankZeroLoggerHook.__name__


def use_atomic_checkpoints(cfg: Config) -> None:
    """Make the config's ``CheckpointHook`` write through the ``atomic_local`` backend (:mod:`mmpvt.engine.fileio`).

    Left alone: a config without a checkpoint hook, one that already chooses a
    backend (``backend_args`` or ``file_client_args``), or a remote ``out_dir``.
    """
    hook = (cfg.get('default_hooks') or {}).get('checkpoint')
    if not hook or hook.get('backend_args') or hook.get('file_client_args'):
        return
    if '://' in str(hook.get('out_dir') or ''):
        return
    hook['backend_args'] = dict(backend='atomic_local')


def train_config(args: argparse.Namespace) -> Config:
    """The checked training config for parsed ``train_parser()`` arguments."""
    cfg = load_config(args.config, args.cfg_options)
    _setup(cfg, args)
    if args.amp or args.amp_dtype:
        amp_optim_wrapper(cfg.optim_wrapper, args.amp_dtype)
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
            raise ConfigError(f'--resume: {missing_checkpoint(args.resume)}')
        cfg.resume, cfg.load_from = True, args.resume
    else:
        check_work_dir(cfg.work_dir)
    load_from = local_load_from(cfg)
    if load_from and not osp.isfile(load_from):
        raise ConfigError(f'load_from: {missing_checkpoint(load_from)}')
    check_pretrained(cfg)
    check_data(cfg, ['train_dataloader', 'val_dataloader'])
    check_num_classes(cfg, ['train_dataloader'])
    use_atomic_checkpoints(cfg)
    return cfg


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
    chosen = resume_from(cfg, resume)
    runner = build_runner(cfg)
    if chosen is not None:
        check_checkpoint_fits(runner.model, chosen.path, shapes=chosen.shapes)
    check_load_from(runner.model, cfg)  # a new run's load_from: classifiers of another class count allowed
    check_train_data(runner)
    check_image_files(runner)
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


def _enable_drawing(cfg: Config, show_dir: str | None, show: bool = False, wait_time: float = 2.0) -> None:
    """Turn on the config's visualization hook: save pictures to ``show_dir`` and/or show them (mmdet's flags)."""
    hook = cfg.default_hooks.get('visualization')
    if hook is None:
        raise ConfigError('--show-dir and --show need default_hooks.visualization in the config')
    if show and not (os.environ.get('DISPLAY') or os.environ.get('WAYLAND_DISPLAY')) and sys.platform == 'linux':
        raise ConfigError('--show needs a display (DISPLAY is not set): use --show-dir DIR to save the pictures')
    hook['draw'] = True
    if show:
        hook['show'], hook['wait_time'] = True, wait_time
    if not show_dir:
        return
    if cfg.default_scope == 'mmdet':
        hook['test_out_dir'] = osp.abspath(show_dir)  # mmdet would put a relative one under WORK_DIR/TIMESTAMP
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
            dataset = leaf_datasets(cfg.test_dataloader.dataset)[0]
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
        raise ConfigError(missing_checkpoint(args.checkpoint))
    if args.out:
        _set_out(cfg, args.out)
    # Under --tta _test loads the checkpoint into the wrapped model: mmengine would load it into the
    # TTA model, whose keys all start with 'module.'.
    cfg.load_from = None if args.tta else args.checkpoint
    check_num_classes(cfg, ['test_dataloader'])
    if args.show_dir or args.show:
        _enable_drawing(cfg, args.show_dir, args.show, args.wait_time)
    if args.tta:
        _enable_tta(cfg)
    if args.amp:
        amp_inference(cfg)
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
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model  # DDP first, then TTA
    if args.tta:
        model = model.module  # a TTA model holds the detector as .module
    check_checkpoint_fits(model, args.checkpoint, shapes=on_rank_zero(checkpoint_shapes, args.checkpoint))
    if args.tta:
        load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True)
    on_rank_zero(check_annotation_files, cfg, ('test_dataloader',))  # the file's categories against the classes
    if args.out and cfg.default_scope == 'mmdet':  # mmseg's --out went into the IoU metric (_set_out)
        from mmdet.evaluation import DumpDetResults

        runner.test_evaluator.metrics.append(DumpDetResults(out_file_path=args.out))
    try:
        return runner.test()
    except Exception as err:  # a corrupt image, a broken annotation file: named by explain_failure
        explained = explain_failure(cfg, err, ('test_dataloader',))
        if explained is None:
            raise
        raise explained from err
