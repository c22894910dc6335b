"""``--amp`` on the CPU: bfloat16 autocast trains the toy RetinaNet-PVT-T with finite losses, and a
non-finite loss is skipped and reported by the loss scaler instead of reaching the weights."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import torch
from helpers import logged_records, small_config
from mmengine.config import Config
from mmengine.logging import MMLogger
from torch import nn

from mmpvt.engine.hooks import CpuFastPathsHook
from mmpvt.engine.optim import CpuAmpOptimWrapper
from mmpvt.launch import ConfigError
from mmpvt.launch import main as launch
from mmpvt.launch.config_checks import amp_inference, amp_optim_wrapper
from mmpvt.models.cpu_features import choose_cpu_dtype


@pytest.mark.slow
def test_amp_trains_the_toy_retinanet(toy_coco: Path, tmp_path: Path) -> None:
    config = small_config(tmp_path / 'small.py', toy_coco, max_epochs=7)  # 7 epochs × 4 = 28 iterations
    # 128-pixel inputs, the toy configs' size. At 64 pixels RetinaNet's P6 map is 1×1, and torch 2.13's CPU
    # bfloat16 weight gradient of a convolution over a 1×1 map is wrong (docs/reliability.md): the scaler
    # then skips those steps, as it should, but the run is not the clean one this test is about.
    size = ['--cfg-options', 'train_dataloader.dataset.pipeline.2.scale=(128,128)']
    # --amp-dtype bfloat16: bf16 whatever the CPU (--amp alone stays fp32 on a CPU without a bf16 matrix unit)
    launch.train([str(config), '--work-dir', str(tmp_path / 'work'), '--amp-dtype', 'bfloat16', *size])
    records = logged_records(tmp_path / 'work')
    losses = [r['loss'] for r in records if 'loss' in r]
    assert len(losses) == 28
    assert all(math.isfinite(loss) for loss in losses), losses
    grad_norms = [r['grad_norm'] for r in records]  # NaN whenever a step of the last 10 had non-finite gradients
    assert all(math.isfinite(norm) for norm in grad_norms), grad_norms
    log = next(tmp_path.glob('work/*/*.log')).read_text()
    assert "type='CpuAmpOptimWrapper'" in log  # the run really used the CPU mixed-precision wrapper
    assert 'step skipped' not in log


def test_amp_picks_the_wrapper_for_the_device() -> None:
    """A GPU: float16 AMP. A CPU: bf16 AMP where it pays (a bf16 matrix unit), else the fp32 wrapper stays."""
    optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-4))
    amp_optim_wrapper(optim_wrapper)
    if torch.cuda.is_available():
        expected = 'AmpOptimWrapper'
    else:
        expected = 'CpuAmpOptimWrapper' if choose_cpu_dtype('auto').dtype == torch.bfloat16 else 'OptimWrapper'
    assert optim_wrapper['type'] == expected
    assert optim_wrapper['optimizer'] == dict(type='AdamW', lr=1e-4)


def test_test_amp_picks_the_inference_precision_for_the_device() -> None:
    cfg = Config(dict(custom_hooks=[dict(type='CpuFastPathsHook'), dict(type='EMAHook')], test_cfg=dict()))
    amp_inference(cfg)
    if torch.cuda.is_available():
        assert cfg.test_cfg.fp16 is True
    else:  # one CpuFastPathsHook, choosing by the hardware; the config's other hooks stay
        assert cfg.custom_hooks == [dict(type='EMAHook'), dict(type='CpuFastPathsHook', dtype='auto')]


def test_the_hook_refuses_an_unknown_dtype_when_built() -> None:
    with pytest.raises(ValueError, match='unknown CPU dtype'):
        CpuFastPathsHook(dtype='half')


def test_amp_dtype_on_the_cpu_is_bfloat16_only() -> None:
    if torch.cuda.is_available():
        pytest.skip('this machine has CUDA')
    optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-4))
    amp_optim_wrapper(optim_wrapper, 'bfloat16')
    assert optim_wrapper['type'] == 'CpuAmpOptimWrapper' and 'dtype' not in optim_wrapper
    with pytest.raises(
        ConfigError, match=r'--amp-dtype float16 needs a GPU: .* \(use --amp, or --amp-dtype bfloat16\)'
    ):
        amp_optim_wrapper(dict(type='OptimWrapper'), 'float16')


def test_forward_runs_in_bfloat16() -> None:
    model = nn.Linear(4, 4)
    wrapper = CpuAmpOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    with wrapper.optim_context(model):
        out = model(torch.ones(2, 4))
    assert out.dtype == torch.bfloat16


def test_non_finite_loss_is_skipped_and_reported() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    wrapper = CpuAmpOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    before = [p.detach().clone() for p in model.parameters()]
    scale = wrapper.loss_scaler.get_scale()

    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append  # mmengine's logger does not propagate to the root logger
    logger = MMLogger.get_current_instance()
    logger.addHandler(handler)
    try:
        with wrapper.optim_context(model):
            loss = model(torch.ones(2, 4)).sum() * float('inf')
        wrapper.update_params(loss)
    finally:
        logger.removeHandler(handler)

    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the step was skipped
    assert wrapper.skipped_steps == 1
    assert wrapper.loss_scaler.get_scale() == scale / 2
    assert any('non-finite gradients (inf or NaN loss); step skipped' in r.getMessage() for r in records)

    with wrapper.optim_context(model):
        loss = model(torch.ones(2, 4)).sum()
    wrapper.update_params(loss)  # the next finite step updates the weights again
    assert not torch.equal(before[0], model.weight)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert wrapper.skipped_steps == 1
