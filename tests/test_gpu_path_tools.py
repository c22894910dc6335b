"""The GPU users' tools, checked on the CPU.

* ``CpuAmpOptimWrapper`` never meets a GPU: a config naming it is refused where CUDA is available
  (``torch.cuda.is_available`` faked), the wrapper refuses parameters off the CPU, and the loss-scaler
  state of one AMP wrapper type is not restored into the other (mmengine's float16
  ``AmpOptimWrapper`` built with CUDA faked).
* ``tools/demo.py`` runs on ``cuda:0`` by default where CUDA is available.
* ``--cfg-options`` accepts new keys (``metainfo.classes`` of a custom dataset, through the real
  ``tools/train.py``) and refuses near misses of existing ones.
"""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from helpers import REPO, TOY_CONFIGS, checkout_env
from mmengine.config import Config
from mmengine.logging import MMLogger
from mmengine.optim import AmpOptimWrapper
from torch import nn

from mmpvt.checkpoint import load_file
from mmpvt.engine import optim as amp
from mmpvt.engine.optim import LOSS_SCALER_KEY, CpuAmpOptimWrapper
from mmpvt.launch import ConfigError
from mmpvt.launch import main as launch

RETINANET_TOY = str(TOY_CONFIGS / 'retinanet_pvt_t_fpn_toy_coco.py')


def toy_args(toy_coco: Path, work_dir: Path, *options: str) -> list[str]:
    roots = [f'{loader}.dataset.data_root={toy_coco}/' for loader in ('train_dataloader', 'val_dataloader')]
    return [RETINANET_TOY, '--work-dir', str(work_dir), '--cfg-options', *roots, *options]


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """``torch.cuda.is_available()`` is True (mmengine's ``is_cuda_available`` and GradScaler ask it).

    A logger is made first: a new MMLogger would look for the fake GPU in CUDA_VISIBLE_DEVICES.
    """
    MMLogger.get_instance('mmpvt_gpu_path_tools')
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)


def test_cpu_amp_config_is_refused_where_cuda_is_available(toy_coco: Path, tmp_path: Path, fake_cuda: None) -> None:
    dumped = toy_args(toy_coco, tmp_path, 'optim_wrapper.type=CpuAmpOptimWrapper')  # a CPU --amp run's config
    with pytest.raises(ConfigError, match=r"CpuAmpOptimWrapper' is the CPU-only .* set optim_wrapper.type='AmpOp"):
        launch.train_config(launch.train_parser().parse_args(dumped))
    # --amp on that machine picks mmengine's float16 wrapper, and the config passes
    cfg = launch.train_config(launch.train_parser().parse_args([*dumped, '--amp']))
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'


@pytest.mark.parametrize(('flags', 'dtype'), [(['--amp'], None), (['--amp-dtype', 'bfloat16'], 'bfloat16'),
                                           (['--amp', '--amp-dtype', 'float16'], 'float16')])  # fmt: skip
def test_amp_dtype_reaches_mmengines_wrapper_on_a_gpu(
    toy_coco: Path, tmp_path: Path, fake_cuda: None, flags: list[str], dtype: str | None
) -> None:
    """--amp-dtype implies --amp; on a GPU it becomes AmpOptimWrapper's dtype (float16 when not given)."""
    cfg = launch.train_config(launch.train_parser().parse_args([*toy_args(toy_coco, tmp_path), *flags]))
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'
    assert cfg.optim_wrapper.get('dtype') == dtype


def test_cpu_amp_wrapper_refuses_parameters_off_the_cpu() -> None:
    model = nn.Linear(2, 2, device='meta')  # stands in for parameters on a GPU
    with pytest.raises(ValueError, match=r'CpuAmpOptimWrapper .* is for CPU training, but .* on meta'):
        CpuAmpOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1))


def trained_cpu_amp_wrapper() -> CpuAmpOptimWrapper:
    """A CPU AMP wrapper after one skipped step (inf loss): its scale halved from 1 to 0.5."""
    model = nn.Linear(2, 2)
    wrapper = CpuAmpOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    with wrapper.optim_context(model):
        loss = model(torch.ones(1, 2)).sum() * float('inf')
    wrapper.update_params(loss)
    assert wrapper.loss_scaler.get_scale() == 0.5
    return wrapper


def test_loss_scaler_state_stays_with_its_wrapper_type(fake_cuda: None) -> None:
    cpu = trained_cpu_amp_wrapper()
    saved = cpu.state_dict()
    assert LOSS_SCALER_KEY in saved and 'loss_scaler' not in saved  # tagged with the wrapper type

    # resumed into mmengine's float16 wrapper (a GPU run): its own dynamic scale, not the CPU run's
    fp16 = AmpOptimWrapper(optimizer=torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1, momentum=0.9))
    fp16.load_state_dict(dict(saved))
    assert fp16.loss_scaler.get_scale() == 2.0**16

    # the other way: the float16 scaler's state is ignored, with a warning
    fresh = CpuAmpOptimWrapper(optimizer=torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1, momentum=0.9))
    fresh.load_state_dict(fp16.state_dict())
    assert fresh.loss_scaler.get_scale() == 1.0

    # the same wrapper type gets its state back
    fresh.load_state_dict(saved)
    assert fresh.loss_scaler.get_scale() == 0.5


def test_cpu_amp_warns_about_a_float16_scaler_state(fake_cuda: None, monkeypatch: pytest.MonkeyPatch) -> None:
    logged: list[tuple[str, int | None]] = []
    monkeypatch.setattr(amp, 'print_log', lambda message, **kwargs: logged.append((message, kwargs.get('level'))))
    fp16 = AmpOptimWrapper(optimizer=torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1))
    wrapper = CpuAmpOptimWrapper(optimizer=torch.optim.SGD(nn.Linear(2, 2).parameters(), lr=0.1))
    wrapper.load_state_dict(fp16.state_dict())
    ((message, level),) = logged
    assert "ignoring the checkpoint's loss-scaler state of another wrapper (scale 65536.0" in message
    assert level == logging.WARNING


def demo_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location('mmpvt_demo_tool', REPO / 'tools' / 'demo.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(('cuda', 'device'), [(True, 'cuda:0'), (False, 'cpu')])
def test_demo_defaults_to_the_gpu_when_there_is_one(
    cuda: bool, device: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(torch.cuda, 'is_available', lambda: cuda)
    files = [tmp_path / name for name in ('config.py', 'model.pth', 'image.jpg')]
    for path in files:
        path.write_bytes(b'')
    demo = demo_module()
    assert demo.parse_args([str(p) for p in files]).device == device
    assert demo.parse_args([*map(str, files), '--device', 'cpu']).device == 'cpu'


def test_new_cfg_option_keys_train_through_the_tool(toy_coco: Path, tmp_path: Path) -> None:
    """mmdet's custom-dataset recipe: RetinaNet-PVT-S on one's own COCO-layout data with two of its classes."""
    work_dir = tmp_path / 'work'
    options = [
        "train_dataloader.dataset.metainfo.classes=['circle','square']",  # as the shell passes "['circle','square']"
        'model.bbox_head.num_classes=2',
        f'train_dataloader.dataset.data_root={toy_coco}/',
        'model.backbone.init_cfg=None',
        'train_dataloader.batch_size=4',
        'train_dataloader.num_workers=0',
        'train_dataloader.persistent_workers=False',
        'train_dataloader.dataset.pipeline.2.scale=(64,64)',
        'train_cfg.max_epochs=1',
        *('val_cfg=None', 'val_dataloader=None', 'val_evaluator=None'),
    ]
    config = REPO / 'configs' / 'retinanet_pvt_s_fpn_1x_coco.py'
    command = [sys.executable, 'tools/train.py', str(config), '--work-dir', str(work_dir), '--cfg-options', *options]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600, env=checkout_env())
    assert result.returncode == 0, result.stderr[-3000:]
    dumped = Config.fromfile(str(work_dir / config.name))  # the config the Runner ran
    assert dumped.train_dataloader.dataset.metainfo.classes == ['circle', 'square']
    head = load_file(work_dir / 'epoch_1.pth')['state_dict']['bbox_head.retina_cls.weight']
    assert head.shape[0] == 9 * 2  # 9 anchors x the 2 classes


@pytest.mark.parametrize(
    ('option', 'message'),
    [
        ('train_cfg.max_epoch=2', r"train_cfg has no 'max_epoch'; did you mean 'max_epochs'\?"),
        ('train_dataloader.dataset.pipline.0.type=X', r"dataset has no 'pipline'; did you mean 'pipeline'\?"),
        ('train_dataloader.dataset.pipeline.9.scale=(64,64)', r'pipeline is a list of 5; expected an index from 0'),
    ],
)
def test_near_misses_are_refused(option: str, message: str, toy_coco: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        launch.train_config(launch.train_parser().parse_args(toy_args(toy_coco, tmp_path, option)))


def test_new_keys_are_accepted(toy_coco: Path, tmp_path: Path) -> None:
    new = ['train_dataloader.dataset.metainfo.palette=[(1,2,3)]', 'model.backbone.drop_path_rate=0.2', 'my_note=1']
    cfg = launch.train_config(launch.train_parser().parse_args(toy_args(toy_coco, tmp_path, *new)))
    assert cfg.train_dataloader.dataset.metainfo.palette == [(1, 2, 3)]
    assert cfg.model.backbone.drop_path_rate == 0.2 and cfg.my_note == 1
