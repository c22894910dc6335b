"""A diverging step never destroys a run's progress (``NonFiniteGuardHook``, ``SkipNonFiniteSteps``).

The fast tests use real mmengine Runners on a small model (``helpers.ToyRegressor``: a linear layer and a
BatchNorm) in-process; the slow ones run ``tools/train.py`` on the toy detector and segmentor.

* A step whose loss or gradients hold inf or NaN is skipped: the parameters and the optimizer state stay,
  and training goes on. Skipped steps in a row stop the run with a message naming the last good checkpoint.
* A model whose parameters or buffers (BatchNorm's running variance) went non-finite is stopped before the
  CheckpointHook writes: no checkpoint with inf or NaN exists, ``last_checkpoint`` keeps naming a good one,
  and ``--resume`` never continues from one.
"""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO, SMALL_SEGMENTOR, TOY_CONFIGS, checkout_env, small_config, toy_runner
from mmengine.hooks import Hook
from mmengine.optim import OptimWrapper
from mmengine.runner import Runner

from mmpvt.checkpoint import load_file, non_finite_tensors
from mmpvt.engine import CpuAmpOptimWrapper, NonFiniteError
from mmpvt.engine.optim import SkipNonFiniteSteps, skip_non_finite_steps
from mmpvt.launch import ConfigError
from mmpvt.launch.resume import choose_resume_checkpoint, readable_checkpoint

NAN = float('nan')


def guarded(model: torch.nn.Module, **kwargs: object) -> OptimWrapper:
    wrapper = OptimWrapper(torch.optim.AdamW(model.parameters(), lr=0.1), **kwargs)
    assert skip_non_finite_steps(wrapper)
    return wrapper


def snapshot(model: torch.nn.Module, wrapper: OptimWrapper) -> list[torch.Tensor]:
    state = [p.detach().clone() for p in model.parameters()]
    return state + [torch.as_tensor(v).clone() for s in wrapper.optimizer.state.values() for v in s.values()]


def same(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


@pytest.mark.parametrize('clip_grad', [None, dict(max_norm=1.0), dict(type='value', clip_value=0.5)])
@pytest.mark.parametrize('poison', [NAN, math.inf])
def test_a_non_finite_step_changes_nothing(clip_grad: dict | None, poison: float) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    wrapper = guarded(model, clip_grad=dict(clip_grad) if clip_grad else None)  # mmengine pops its type
    wrapper.update_params(model(torch.randn(4, 3)).square().mean())  # a normal step: AdamW state exists
    before = snapshot(model, wrapper)

    wrapper.update_params(model(torch.randn(4, 3)).square().mean() * poison)

    assert same(snapshot(model, wrapper), before)
    assert (wrapper.steps, wrapper.skipped_steps) == (2, 1)
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())  # zeroed for the next step
    wrapper.update_params(model(torch.randn(4, 3)).square().mean())
    assert (wrapper.steps, wrapper.skipped_steps) == (3, 1)
    assert not same(snapshot(model, wrapper), before)
    assert math.isfinite(wrapper.last_grad_norm)


def test_a_non_finite_gradient_with_a_finite_loss_is_skipped() -> None:
    model = torch.nn.Linear(3, 2)
    wrapper = guarded(model)
    before = snapshot(model, wrapper)
    loss = model(torch.randn(4, 3)).sum()
    loss.register_hook(lambda grad: grad * math.inf)  # the loss is finite, its gradients are not
    wrapper.update_params(loss)
    assert wrapper.skipped_steps == 1 and same(snapshot(model, wrapper), before)


def test_a_non_finite_micro_batch_skips_its_accumulated_step() -> None:
    model = torch.nn.Linear(3, 2)
    wrapper = guarded(model, accumulative_counts=2)
    wrapper.initialize_count_status(model, 0, 4)
    before = snapshot(model, wrapper)
    wrapper.update_params(model(torch.randn(4, 3)).sum() * NAN)
    wrapper.update_params(model(torch.randn(4, 3)).sum())
    assert (wrapper.steps, wrapper.skipped_steps) == (1, 1) and same(snapshot(model, wrapper), before)


def test_mixed_precision_wrappers_keep_their_own_loss_scaler() -> None:
    model = torch.nn.Linear(3, 2)
    amp = CpuAmpOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    assert not skip_non_finite_steps(amp) and type(amp) is CpuAmpOptimWrapper
    plain = guarded(model)
    assert skip_non_finite_steps(plain) and type(plain).__mro__[1:3] == (SkipNonFiniteSteps, OptimWrapper)


def test_non_finite_tensors_names_parameters_buffers_and_optimizer_state() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3))
    assert non_finite_tensors(model.state_dict()) == []
    model[1].running_var[1] = math.inf
    model[0].bias.data[0] = NAN
    state = {'state_dict': model.state_dict(), 'optimizer': {'state': {0: {'exp_avg': torch.tensor([NAN])}}}}
    assert non_finite_tensors(state) == ['state_dict.0.bias', 'state_dict.1.running_var', 'optimizer.state.0.exp_avg']
    assert non_finite_tensors({'num_batches_tracked': torch.tensor(3), 'empty': torch.empty(0)}) == []


def weights(path: Path) -> dict[str, torch.Tensor]:
    return {k: v for k, v in load_file(path)['state_dict'].items() if not k.startswith('bn.')}


def test_a_poisoned_iteration_is_skipped_and_training_goes_on(tmp_path: Path) -> None:
    runner = toy_runner(tmp_path, custom_hooks=[dict(type='PoisonLossHook', term='loss_l1', first=3)])
    runner.train()

    # iteration 3 changed no weight; 2 and 4 did
    assert all(torch.equal(v, weights(tmp_path / 'iter_3.pth')[k]) for k, v in weights(tmp_path / 'iter_2.pth').items())
    assert not torch.equal(
        weights(tmp_path / 'iter_3.pth')['linear.weight'], weights(tmp_path / 'iter_4.pth')['linear.weight']
    )
    for path in tmp_path.glob('iter_*.pth'):
        assert non_finite_tensors(load_file(path)) == [], path
    log = next(tmp_path.glob('*/*.log')).read_text()
    skipped = 'iteration 3: non-finite loss or gradient, step skipped (weights unchanged); non-finite loss terms:'
    assert f'{skipped} loss=nan, loss_l1=nan;' in log
    assert '1 skipped in a row (1 in all; the run stops at 20 in a row)' in log
    assert runner.iter == 12


def test_skipped_steps_in_a_row_stop_the_run(tmp_path: Path) -> None:
    hooks = [
        dict(type='PoisonLossHook', term='loss_mse', first=5, last=100),
        dict(type='NonFiniteGuardHook', max_consecutive_skips=3),
    ]
    runner = toy_runner(tmp_path, custom_hooks=hooks)
    with pytest.raises(NonFiniteError) as stopped:
        runner.train()

    message = str(stopped.value)
    assert message.startswith('3 training steps in a row had a non-finite loss or gradient (iterations 5 to 7;')
    # the skipped steps changed nothing, so their checkpoints are good; the run stopped before saving iteration 7
    assert f'the last good checkpoint is {tmp_path / "iter_6.pth"}' in message
    assert not (tmp_path / 'iter_7.pth').exists()
    assert 'learning rate is now' in message and 'likely causes: a learning rate too high' in message
    for path in tmp_path.glob('iter_*.pth'):
        assert non_finite_tensors(load_file(path)) == [], path


class OverflowingStatistics(Hook):
    """From iteration 6 on, BatchNorm's running variance is inf, as overflowing activations make it."""

    def after_train_iter(
        self, runner: Runner, batch_idx: int, data_batch: object = None, outputs: object = None
    ) -> None:
        if runner.iter + 1 >= 6:
            runner.model.bn.running_var.fill_(math.inf)


def test_a_non_finite_buffer_is_never_saved(tmp_path: Path) -> None:
    """The loss and gradients stay finite while BatchNorm's running variance overflows: no checkpoint takes it."""
    runner = toy_runner(tmp_path)
    runner.register_hook(OverflowingStatistics(), priority='HIGH')
    with pytest.raises(NonFiniteError) as stopped:
        runner.train()

    assert 'by the end of iteration 6: bn.running_var hold inf or NaN' in str(stopped.value)
    assert f'The last good checkpoint is {tmp_path / "iter_5.pth"}' in str(stopped.value)
    assert not (tmp_path / 'iter_6.pth').exists()
    assert (tmp_path / 'last_checkpoint').read_text() == str(tmp_path / 'iter_5.pth')
    assert non_finite_tensors(load_file(tmp_path / 'iter_5.pth')) == []


def test_no_checkpoint_with_a_non_finite_tensor_is_written(tmp_path: Path) -> None:
    """Any save (here the Runner's own, outside the CheckpointHook's schedule) is refused before a byte is written."""
    runner = toy_runner(tmp_path, max_epochs=1)
    runner.train()
    before = (tmp_path / 'iter_4.pth').read_bytes()
    runner.model.linear.weight.data[0, 0] = NAN
    with pytest.raises(NonFiniteError, match=r'refusing to save a checkpoint at iteration 4: linear\.weight hold'):
        runner.save_checkpoint(str(tmp_path), 'iter_4.pth', by_epoch=False, meta=dict(iter=4))
    assert (tmp_path / 'iter_4.pth').read_bytes() == before


def save_toy(path: Path, **poisoned: float) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3))
    for name, value in poisoned.items():
        model.state_dict()[name].fill_(value)
    torch.save({'state_dict': model.state_dict(), 'meta': {'iter': 1}}, path)


def test_resume_passes_over_a_non_finite_checkpoint(tmp_path: Path) -> None:
    save_toy(tmp_path / 'iter_4.pth')
    save_toy(tmp_path / 'iter_8.pth', **{'1.running_var': math.inf})  # written by a run without the guard
    (tmp_path / 'last_checkpoint').write_text(str(tmp_path / 'iter_8.pth'))

    chosen = readable_checkpoint(str(tmp_path))

    assert chosen is not None and chosen.path == str(tmp_path / 'iter_4.pth')
    with pytest.raises(ConfigError, match=r'iter_8\.pth with non-finite values: 1\.running_var hold inf'):
        choose_resume_checkpoint(str(tmp_path), str(tmp_path / 'iter_8.pth'))


def test_loading_a_non_finite_checkpoint_is_refused(tmp_path: Path) -> None:
    """Under mmdet's or mmseg's tools, whose --resume we do not choose: the hook refuses what the Runner loads."""
    runner = toy_runner(tmp_path / 'a', max_epochs=1)
    runner.train()
    checkpoint = load_file(tmp_path / 'a' / 'iter_4.pth')
    checkpoint['state_dict']['bn.running_mean'][0] = NAN
    torch.save(checkpoint, tmp_path / 'bad.pth')
    runner = toy_runner(tmp_path / 'b', max_epochs=2)
    with pytest.raises(NonFiniteError, match=r'bn\.running_mean hold inf or NaN; training cannot continue'):
        runner.load_checkpoint(str(tmp_path / 'bad.pth'))


# --- through tools/train.py -----------------------------------------------------------------------


def train(config: Path, work_dir: Path) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, 'tools/train.py', str(config), '--work-dir', str(work_dir)]
    env = checkout_env(extra_path=(REPO / 'tests',), OMP_NUM_THREADS='1')
    return subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=900, env=env)


POISONED = """
custom_imports = dict(imports=['mmpvt', 'helpers'], allow_failed_imports=False)
custom_hooks = [dict(type='PoisonLossHook', term='loss_cls', first={first}, last={last})]
"""


@pytest.mark.slow
def test_the_detector_skips_a_nan_step_and_stops_on_many(toy_coco: Path, tmp_path: Path) -> None:
    once = small_config(tmp_path / 'once.py', toy_coco, max_epochs=2)
    with once.open('a') as f:
        f.write(POISONED.format(first=3, last=3))
    always = small_config(tmp_path / 'always.py', toy_coco, max_epochs=10)
    with always.open('a') as f:
        f.write(
            POISONED.format(first=6, last=1000)
            + 'custom_hooks.append(dict(type="NonFiniteGuardHook", max_consecutive_skips=4))\n'
        )

    result = train(once, tmp_path / 'once')
    assert result.returncode == 0, result.stderr[-3000:]
    skipped = 'iteration 3: non-finite loss or gradient, step skipped (weights unchanged); non-finite loss terms:'
    assert f'{skipped} loss=nan, loss_cls=nan;' in result.stdout
    final = load_file(tmp_path / 'once' / 'epoch_2.pth')
    assert non_finite_tensors(final) == [] and final['meta']['iter'] == 8

    result = train(always, tmp_path / 'always')
    assert result.returncode == 1
    (error,) = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
    assert error.startswith('error: 4 training steps in a row had a non-finite loss or gradient (iterations 6 to 9;')
    assert f'the last good checkpoint is {tmp_path / "always" / "epoch_2.pth"}' in error
    assert 'Traceback' not in result.stderr
    for path in (tmp_path / 'always').glob('*.pth'):
        assert non_finite_tensors(load_file(path)) == [], path


#: The issue's run: Semantic FPN PVT-T, AdamW at lr 200, a checkpoint every 4 iterations (made small).
DIVERGING_SEGMENTOR = (
    SMALL_SEGMENTOR
    + """optim_wrapper = dict(optimizer=dict(lr=200.0))
param_scheduler = []
train_cfg = dict(max_iters=16, val_interval=1000)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=4))
randomness = dict(seed=0)
"""
)


@pytest.mark.slow
def test_a_diverging_segmentor_stops_before_saving_inf_statistics(toy_ade: Path, tmp_path: Path) -> None:
    """Before: exit 0, finite losses logged, every checkpoint from iteration 4 on with inf in a running_var."""
    config = tmp_path / 'lr200.py'
    config.write_text(DIVERGING_SEGMENTOR.format(base=TOY_CONFIGS / 'fpn_pvt_t_toy_ade.py', data_root=toy_ade))
    result = train(config, tmp_path / 'work')

    assert result.returncode == 1, result.stdout[-3000:] + result.stderr[-3000:]
    (error,) = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
    assert 'the training state went non-finite by the end of iteration' in error
    assert 'running_var' in error and 'likely causes: a learning rate too high' in error
    for path in (tmp_path / 'work').glob('*.pth'):
        assert non_finite_tensors(load_file(path)) == [], path
