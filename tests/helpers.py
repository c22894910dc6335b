"""Helpers that several test files share: paths and subprocess environments, the toy configs made small and
pointed at test data, what a run logged, random models and their official and mmdet references, the variant
configs. Fixtures and hooks live in ``conftest.py``; test files import these names from here.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import hashlib
import importlib
import importlib.util
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.evaluator import BaseMetric
from mmengine.hooks import Hook
from mmengine.logging import MMLogger
from mmengine.model import BaseModel, is_model_wrapper
from mmengine.registry import DATASETS, HOOKS, METRICS, MODELS, DefaultScope
from mmengine.runner import Runner
from torch.utils.data import Dataset

from mmpvt import PVT

REPO = Path(__file__).resolve().parents[1]
TOY_CONFIGS = REPO / 'configs' / 'toy'
TINY = 64  # image side of the test datasets


def checkout_env(*, extra_path: tuple[str | os.PathLike[str], ...] = (), **overrides: str) -> dict[str, str]:
    """The environment for a subprocess that must import this checkout's mmpvt.

    ``import mmpvt`` would otherwise resolve through the installed (editable) package, which may point at
    another clone. The repository root goes first on PYTHONPATH, then ``extra_path``, then what was inherited.

    Args:
        extra_path: more folders for PYTHONPATH, after the repository root.
        **overrides: variables set on top of this process's environment.
    """
    env = {**os.environ, **overrides}
    inherited = [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p]
    env['PYTHONPATH'] = os.pathsep.join([str(REPO), *map(str, extra_path), *inherited])
    return env


# --- the tools as subprocesses ------------------------------------------------------------------


def run_tool(
    tool: str, *args: str | os.PathLike[str], cwd: str | os.PathLike[str] = REPO, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python tools/TOOL ARGS`` on this checkout, one thread, from ``cwd``, with ``env`` on top."""
    return subprocess.run(
        [sys.executable, str(REPO / 'tools' / tool), *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
        env=checkout_env(OMP_NUM_THREADS='1', **(env or {})),
    )


@contextlib.contextmanager
def captured_log(
    level: int = logging.NOTSET, logger: logging.Logger | None = None
) -> Iterator[list[logging.LogRecord]]:
    """The records of ``level`` and above that mmengine's current logger (or ``logger``) handles inside the block.

    mmengine's loggers do not propagate to the root logger, so pytest's ``caplog`` never sees them.
    """
    records: list[logging.LogRecord] = []
    handler = logging.Handler(level)
    handler.emit = records.append
    logger = logger or MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, zombies included (gpu_check's walk over /proc)."""
    return gpucheck_build().descendants(pid, zombies=True)


@functools.cache
def gpucheck_build() -> ModuleType:
    """``tools/analysis/gpucheck/build.py``: gpucheck is a package of the tools, not of mmpvt."""
    tools = str(REPO / 'tools' / 'analysis')
    if tools not in sys.path:
        sys.path.insert(0, tools)
    return importlib.import_module('gpucheck.build')


def hashes(*roots: Path) -> dict[str, str]:
    """SHA-256 of every file under ``roots`` (or of ``roots`` themselves when they are files)."""
    files = [p for root in roots for p in ([root] if root.is_file() else sorted(root.rglob('*'))) if p.is_file()]
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def assert_refused(result: subprocess.CompletedProcess[str], *expected: str) -> str:
    """Exit status 1, one ``error:`` line holding every ``expected`` text, no traceback; returns the message."""
    assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-3000:]
    assert 'Traceback' not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
    assert len(errors) == 1, result.stderr[-3000:]
    message = result.stderr.strip().splitlines()[-1]
    assert message == errors[0], result.stderr[-3000:]
    for text in expected:
        assert text in message, message
    return message


# --- toy configs and what their runs wrote ------------------------------------------------------


def point_to_data(cfg: Config, data_root: Path) -> Config:
    """Make every dataloader and the COCO evaluators of a toy config read ``data_root`` (TINY-pixel images)."""
    root = str(data_root / 'ADEChallengeData2016') if cfg.default_scope == 'mmseg' else str(data_root)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[loader].dataset.data_root = root
        cfg[loader].num_workers = 0
        cfg[loader].persistent_workers = False
        for transform in cfg[loader].dataset.pipeline:
            if transform.type == 'Resize':
                transform.scale = (TINY, TINY)
    for evaluator in ('val_evaluator', 'test_evaluator'):
        if 'ann_file' in cfg[evaluator]:
            cfg[evaluator].ann_file = str(data_root / 'annotations' / 'instances_val2017.json')
    if cfg.default_scope == 'mmseg':
        cfg.model.data_preprocessor.size = (TINY, TINY)
    return cfg


def toy_config(name: str, data_root: Path, work_dir: Path) -> Config:
    """``configs/toy/NAME.py`` reading ``data_root`` and writing to ``work_dir``."""
    cfg = point_to_data(Config.fromfile(str(TOY_CONFIGS / f'{name}.py')), data_root)
    cfg.work_dir = str(work_dir)
    cfg.launcher = 'none'
    return cfg


MAX_EPOCHS = 5  # 8 images / batch 2 = 4 iterations per epoch: 20 iterations

#: Toy RetinaNet-PVT-T made small for a test: depths (1, 1, 1, 1), 32-channel FPN and head,
#: 64-pixel images, a checkpoint every epoch, no validation.
SMALL_CONFIG = """
_base_ = '{base}'
data_root = '{data_root}/'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=(64, 64), keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
loader = dict(num_workers=0, persistent_workers=False)
train_dataloader = dict(batch_size=2, **loader, dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(batch_size=2, **loader, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator
model = dict(
    backbone=dict(depths=(1, 1, 1, 1)),
    neck=dict(out_channels=32),
    bbox_head=dict(in_channels=32, feat_channels=32, stacked_convs=1),
    data_preprocessor=dict(pad_size_divisor=32),
)
max_epochs = {max_epochs}
train_cfg = dict(max_epochs=max_epochs, val_begin=1000)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=8),
    dict(type='CosineAnnealingLR', eta_min=1e-5, begin=0, end=max_epochs, by_epoch=True, convert_to_iter_based=True),
]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
randomness = dict(seed=0, deterministic=True)
"""


#: The toy Semantic FPN made small for runs of a few iterations (``base``: its config, ``data_root``: the
#: toy ADE20K root); the tests append their schedule, hooks and randomness.
SMALL_SEGMENTOR = """
_base_ = '{base}'
data_root = '{data_root}/ADEChallengeData2016'
loader = dict(num_workers=0, persistent_workers=False)
train_dataloader = dict(batch_size=4, **loader, dataset=dict(data_root=data_root))
val_dataloader = dict(batch_size=2, **loader, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
model = dict(data_preprocessor=dict(size=(64, 64)), backbone=dict(depths=(1, 1, 1, 1)))
"""


def small_config(path: Path, data_root: Path, max_epochs: int = MAX_EPOCHS) -> Path:
    """The small toy RetinaNet config reading ``data_root``, written to ``path``."""
    base = TOY_CONFIGS / 'retinanet_pvt_t_fpn_toy_coco.py'
    path.write_text(SMALL_CONFIG.format(base=base, data_root=data_root, max_epochs=max_epochs))
    return path


def two_class_coco(toy_coco: Path, root: Path) -> Path:
    """A copy of the toy COCO at ``root`` turned into a two-class set (categories blob, ring)."""
    shutil.copytree(toy_coco, root)
    for split in ('train2017', 'val2017'):
        path = root / 'annotations' / f'instances_{split}.json'
        content = json.loads(path.read_text())
        content['categories'] = [dict(id=1, name='blob'), dict(id=2, name='ring')]
        content['annotations'] = [a for a in content['annotations'] if a['category_id'] in (1, 2)]
        path.write_text(json.dumps(content))
    return root


def logged_records(work_dir: Path) -> list[dict]:
    """Every record of the Runner's ``scalars.json`` logs, over every run (timestamped folder) of a work dir."""
    return [
        json.loads(line)
        for log in sorted(work_dir.glob('*/vis_data/scalars.json'))
        for line in log.read_text().splitlines()
    ]


def logged_test_metrics(work_dir: Path) -> dict[str, float]:
    """The metrics tools/test.py logged to WORK_DIR/TIMESTAMP/TIMESTAMP.json."""
    (log,) = work_dir.glob('*/*.json')
    return json.loads(log.read_text().splitlines()[-1])


def save_checkpoint(config: Path, path: Path) -> None:
    """An untrained model saved the way mmengine's CheckpointHook saves (state_dict + meta)."""
    cfg = Config.fromfile(str(config))
    registry = importlib.import_module(f'{cfg.default_scope}.registry').MODELS
    torch.manual_seed(0)
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        model = registry.build(cfg.model)
    meta = dict(dataset_meta=dict(classes=tuple(cfg.get('metainfo', {}).get('classes', ()))), epoch=np.int64(1))
    torch.save(dict(state_dict=model.state_dict(), meta=meta), path)


# --- faults: test-only hooks (a config imports them with custom_imports=['helpers']) --------------


@HOOKS.register_module(force=True)
class PoisonLossHook(Hook):
    """Test only: multiply one loss term by NaN in training iterations ``first`` to ``last`` (1-based).

    It wraps the model's ``parse_losses`` for those iterations, so the detector's or segmentor's own loss
    term goes non-finite, and its gradients with it.
    """

    priority = 'VERY_HIGH'

    def __init__(self, term: str, first: int, last: int | None = None) -> None:
        self.term, self.first, self.last = term, first, first if last is None else last

    def before_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        vars(model).pop('parse_losses', None)
        if not self.first <= runner.iter + 1 <= self.last:
            return
        term, parse = self.term, type(model).parse_losses

        def poisoned(losses: dict[str, Any]) -> Any:
            value = losses[term]
            nan = float('nan')
            return parse(model, {**losses, term: [v * nan for v in value] if isinstance(value, list) else value * nan})

        model.parse_losses = poisoned


@HOOKS.register_module(force=True)
class SignalAtIterationHook(Hook):
    """Test only: send this process ``signal_name`` at the end of training iteration ``iteration`` (1-based).

    With ``in_validation``, at the end of the first validation iteration after it instead; with ``again``,
    once more while the checkpoint that the first signal asks for is being saved.
    """

    priority = 'VERY_HIGH'  # before StopOnSignalHook looks (LOWEST)

    def __init__(
        self, iteration: int, signal_name: str = 'SIGTERM', again: bool = False, in_validation: bool = False
    ) -> None:
        self.iteration, self.signal, self.again = iteration, signal.Signals[signal_name], again
        self.in_validation, self.sent = in_validation, False

    def after_train_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        if runner.iter + 1 == self.iteration and not self.in_validation:
            self._send()

    def after_val_iter(self, runner: Any, batch_idx: int, data_batch: Any = None, outputs: Any = None) -> None:
        if self.in_validation and runner.iter >= self.iteration:
            self._send()

    def _send(self) -> None:
        if not self.sent:
            self.sent = True
            os.kill(os.getpid(), self.signal)

    def before_save_checkpoint(self, runner: Any, checkpoint: dict[str, Any]) -> None:
        if self.again and 'stopped_by_signal' in checkpoint['meta']:
            os.kill(os.getpid(), self.signal)
            time.sleep(0.1)  # the handler runs here, in the middle of the save


@HOOKS.register_module(force=True)
class SlowStopCheckpointHook(Hook):
    """Test only: the checkpoint a signal asks for is written, then waits before its rename.

    Once its bytes are in the temporary file, ``WORK_DIR/saving`` appears and the fsync before the
    rename sleeps 600 s: a test kills the process meanwhile, in the middle of the atomic write.
    """

    def before_save_checkpoint(self, runner: Any, checkpoint: dict[str, Any]) -> None:
        if 'stopped_by_signal' not in checkpoint['meta']:
            return
        fsync, marker = os.fsync, Path(runner.work_dir, 'saving')

        def slow_fsync(fd: int) -> None:
            fsync(fd)
            marker.touch()
            time.sleep(600)

        os.fsync = slow_fsync


# --- a small mmengine model, for in-process Runners ----------------------------------------------


@MODELS.register_module(force=True)
class ToyRegressor(BaseModel):
    """A linear layer and a BatchNorm (whose running statistics are buffers), with two loss terms."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = torch.nn.Linear(4, 4)
        self.bn = torch.nn.BatchNorm1d(4)

    def forward(self, inputs: Sequence[torch.Tensor], targets: Sequence[torch.Tensor], mode: str = 'tensor') -> Any:
        out = self.bn(self.linear(torch.stack(inputs)))
        if mode == 'loss':
            target = torch.stack(targets)
            return {'loss_mse': F.mse_loss(out, target), 'loss_l1': F.l1_loss(out, target)}
        return out


@METRICS.register_module(force=True)
class ToyError(BaseMetric):
    """The mean absolute output of :class:`ToyRegressor` on the validation set (a metric to validate with)."""

    def process(self, data_batch: Any, data_samples: Sequence[Any]) -> None:
        self.results.append(float(torch.stack(list(data_samples)).abs().mean()))

    def compute_metrics(self, results: list[float]) -> dict[str, float]:
        return {'error': float(np.mean(results))}


@DATASETS.register_module(force=True)
class ToyRegression(Dataset):
    """16 fixed pairs; each read adds numpy noise to the input, as a random augmentation of a pipeline would."""

    def __init__(self, size: int = 16) -> None:
        gen = torch.Generator().manual_seed(0)
        self.inputs, self.targets = torch.randn(size, 4, generator=gen), torch.randn(size, 4, generator=gen)

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        noise = torch.from_numpy(np.random.normal(0.0, 0.1, 4).astype(np.float32))
        return dict(inputs=self.inputs[index] + noise, targets=self.targets[index])


ATOMIC = dict(backend='atomic_local')


def toy_runner(
    work_dir: Path,
    *,
    custom_hooks: Sequence[dict] = (),
    max_consecutive_skips: int = 20,
    max_epochs: int = 3,
    resume: bool = False,
    validate: bool = False,
) -> Runner:
    """A real Runner training :class:`ToyRegressor` for ``max_epochs`` epochs of 4 iterations, saving every iteration.

    Seeded, with mmpvt's stop and non-finite hooks as our tools add them, and ``custom_hooks`` after them;
    ``validate``: after every epoch, on the training set.
    """
    loader = dict(dataset=dict(type='ToyRegression'), batch_size=4, num_workers=0)
    val_loader = dict(**loader, sampler=dict(type='DefaultSampler', shuffle=False))
    validation = (
        dict(val_dataloader=val_loader, val_cfg=dict(), val_evaluator=dict(type='ToyError')) if validate else {}
    )
    cfg = dict(
        model=dict(type='ToyRegressor'),
        work_dir=str(work_dir),
        experiment_name=f'toy_{uuid.uuid4().hex[:8]}',  # a logger and message hub of its own
        train_dataloader=dict(**loader, sampler=dict(type='DefaultSampler', shuffle=True)),
        **validation,
        train_cfg=dict(by_epoch=True, max_epochs=max_epochs),
        optim_wrapper=dict(optimizer=dict(type='AdamW', lr=0.01)),
        param_scheduler=[dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0, end=6)],
        default_hooks=dict(
            checkpoint=dict(
                type='CheckpointHook', interval=1, by_epoch=False, backend_args=dict(backend='atomic_local')
            ),
            logger=dict(type='LoggerHook', interval=1),
        ),
        custom_hooks=[
            dict(type='StopOnSignalHook'),
            dict(type='NonFiniteGuardHook', max_consecutive_skips=max_consecutive_skips),
            *custom_hooks,
        ],
        randomness=dict(seed=0),
        resume=resume,
        default_scope='mmengine',
    )
    return Runner.from_cfg(Config(cfg))


# --- random models and their references ---------------------------------------------------------


def randomize_(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Overwrite every parameter in place with distinct random values, so a swapped or misplaced one shows.

    LayerNorm scales ~ 0.5 ± 0.1, other weights ~ 0.5/sqrt(fan-in), biases and position embeddings
    ~ 0.1: stage outputs then have a standard deviation of about 0.5-1 (max |x| about 3-5), the scale at
    which fp32 rounding stays below the 1e-5 absolute tolerance of the parity tests (it grows with it).
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=gen)
            if param.ndim == 1 and name.endswith('weight'):  # LayerNorm scales are the only 1-D weights
                param.copy_(0.5 + 0.1 * noise)
            elif param.ndim == 1 or name.endswith('pos_embed'):
                param.copy_(0.1 * noise)
            else:
                param.copy_(0.5 * noise / param[0].numel() ** 0.5)
    return model


def to_official(state_dict: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """An mmpvt state dict in the official whai362/PVT layout (the inverse of mmpvt's converter).

    ``stages.{i}.patch_embed.*`` -> ``patch_embed{i+1}.*``, ``stages.{i}.pos_embed`` ->
    ``pos_embed{i+1}``, ``stages.{i}.blocks.{j}.*`` -> ``block{i+1}.{j}.*`` with ``mlp.dwconv``
    -> ``mlp.dwconv.dwconv``, ``stages.{i}.norm.*`` -> ``norm{i+1}.*``. Like the release, it
    adds a class-token entry in front of ``pos_embed4`` (49 -> 50) and the classifier's
    ``cls_token``, ``norm.*`` and ``head.*``, all random (a backbone must drop them).
    """
    gen, out = torch.Generator().manual_seed(seed), {}
    for key, value in state_dict.items():
        stage, part, rest = re.fullmatch(r'stages\.(\d+)\.(patch_embed|pos_embed|blocks|norm)\.?(.*)', key).groups()
        s = int(stage) + 1
        new = {'patch_embed': f'patch_embed{s}.', 'pos_embed': f'pos_embed{s}', 'blocks': f'block{s}.'}
        out[new.get(part, f'norm{s}.') + rest.replace('mlp.dwconv.', 'mlp.dwconv.dwconv.')] = value.clone()
    dims = out['patch_embed4.proj.weight'].shape[0]
    if 'pos_embed4' in out:
        out['pos_embed4'] = torch.cat([torch.randn(1, 1, dims, generator=gen), out['pos_embed4']], dim=1)
    out['cls_token'] = torch.randn(1, 1, dims, generator=gen)
    out['norm.weight'], out['norm.bias'] = torch.randn(dims, generator=gen), torch.randn(dims, generator=gen)
    out['head.weight'], out['head.bias'] = torch.randn(1000, dims, generator=gen), torch.randn(1000, generator=gen)
    return out


def to_timm(official: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An official PVTv2 state dict in timm's ``PyramidVisionTransformerV2`` layout, renamed the way timm
    documents its own loading of the official files: ``patch_embed1`` -> ``patch_embed``, ``patch_embed{s}``
    -> ``stages.{s-1}.downsample``, ``block{s}.{j}`` -> ``stages.{s-1}.blocks.{j}``, ``norm{s}`` ->
    ``stages.{s-1}.norm``, ``mlp.dwconv.dwconv`` -> ``mlp.dwconv``. The classifier ``head.*`` stays; the v1
    leftovers timm's model does not have (``cls_token``, ``norm.*``) go."""
    out = {}
    for key, value in official.items():
        if key == 'cls_token' or key.startswith('norm.'):
            continue
        key = re.sub(r'^patch_embed1\.', 'patch_embed.', key)
        key = re.sub(r'^patch_embed(\d)\.', lambda m: f'stages.{int(m[1]) - 1}.downsample.', key)
        key = re.sub(r'^block(\d)\.(\d+)\.', lambda m: f'stages.{int(m[1]) - 1}.blocks.{m[2]}.', key)
        key = re.sub(r'^norm(\d)\.', lambda m: f'stages.{int(m[1]) - 1}.norm.', key)
        out[key.replace('mlp.dwconv.dwconv.', 'mlp.dwconv.')] = value.clone()
    return out


@functools.cache
def _built(arch: str, pretrain_img_size: int = 224) -> PVT:
    torch.manual_seed(123)
    return PVT(arch, drop_path_rate=0.0, pretrain_img_size=pretrain_img_size).eval()


def fresh_pvt(arch: str, *, pretrain_img_size: int = 224, init_cfg: dict | None = None) -> PVT:
    """A default-initialised PVT (copied from a cache: building one runs seconds of trunc_normal_)."""
    model = copy.deepcopy(_built(arch, pretrain_img_size))
    model.init_cfg = init_cfg
    return model


#: mmdet's keyword arguments for each variant (its defaults are PVT-S / PVTv2-b2 otherwise).
MMDET_ARCHS = {
    'tiny': dict(type='PyramidVisionTransformer', num_layers=[2, 2, 2, 2]),
    'small': dict(type='PyramidVisionTransformer', num_layers=[3, 4, 6, 3]),
    'b0': dict(type='PyramidVisionTransformerV2', embed_dims=32, num_layers=[2, 2, 2, 2]),
    'b2': dict(type='PyramidVisionTransformerV2', num_layers=[3, 4, 6, 3]),
}


def mmdet_numerics_pvt(arch: str, init_cfg: dict | None = None) -> PVT:
    """An mmpvt PVT with mmdet's LayerNorm eps (1e-6 after the patch embedding and SR reduction too)."""
    torch.manual_seed(123)
    return PVT(arch, drop_path_rate=0.0, embed_norm_eps=1e-6, init_cfg=init_cfg).eval()


def stage_diffs(ours: torch.nn.Module, theirs: torch.nn.Module, image_hw: tuple[int, int]) -> list[float]:
    """Max abs difference of each stage's output on one random image."""
    image = torch.randn(1, 3, *image_hw, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        outs, refs = ours(image), theirs(image)
    assert [o.shape for o in outs] == [r.shape for r in refs]
    assert all(r.abs().max() > 0.1 for r in refs)  # a real signal, not a collapsed one
    return [(o - r).abs().max().item() for o, r in zip(outs, refs, strict=True)]


RETINANET = dict(
    type='RetinaNet',
    data_preprocessor=dict(type='DetDataPreprocessor', mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375]),
    neck=dict(type='FPN', in_channels=[64, 128, 320, 512], out_channels=32, start_level=1, num_outs=5),
    bbox_head=dict(
        type='RetinaHead',
        num_classes=3,
        in_channels=32,
        stacked_convs=1,
        feat_channels=32,
        anchor_generator=dict(
            type='AnchorGenerator',
            octave_base_scale=4,
            scales_per_octave=3,
            ratios=[0.5, 1.0, 2.0],
            strides=[8, 16, 32, 64, 128],
        ),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4, target_stds=[1.0] * 4),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='L1Loss', loss_weight=1.0),
    ),
)


def load_cli() -> ModuleType:
    """tools/model_converters/pvt2mmpvt.py as a module, to call its ``main(argv)`` in-process."""
    spec = importlib.util.spec_from_file_location('pvt2mmpvt', REPO / 'tools/model_converters/pvt2mmpvt.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- the variant configs ------------------------------------------------------------------------

FAMILIES = ('retinanet_pvt_{}_fpn_1x_coco', 'mask_rcnn_pvt_{}_fpn_1x_coco')
SEG_FAMILIES = ('fpn_pvt_{}_512x512_40k_ade20k', 'upernet_pvt_{}_512x512_160k_ade20k')
ARCHS = {'t': 'tiny', 's': 'small', 'm': 'medium', 'l': 'large'}
V2_ARCHS = ('b0', 'b1', 'b2', 'b3', 'b4', 'b5')

#: config name -> (backbone type, arch, pretrained checkpoint) of every full-size config.
VARIANTS = {
    **{
        family.format(short): ('PVT', arch, f'pretrained/pvt_{arch}.pth')
        for family in FAMILIES + SEG_FAMILIES
        for short, arch in ARCHS.items()
    },
    **{
        f'{family}_pvtv2_{arch}_fpn_1x_coco': ('PVTv2', arch, f'pretrained/pvt_v2_{arch}.pth')
        for family in ('retinanet', 'mask_rcnn')
        for arch in (*V2_ARCHS, 'b2_li')
    },
    **{f'fpn_pvtv2_{arch}_512x512_40k_ade20k': ('PVTv2', arch, f'pretrained/pvt_v2_{arch}.pth') for arch in V2_ARCHS},
    'upernet_pvtv2_b2_512x512_160k_ade20k': ('PVTv2', 'b2', 'pretrained/pvt_v2_b2.pth'),
}
