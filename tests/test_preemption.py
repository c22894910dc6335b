"""A preempted run loses at most one iteration and continues where it stopped (``StopOnSignalHook``).

Fast tests: real mmengine Runners on ``helpers.ToyRegressor`` in this process, signalled by a test hook
at a given iteration. Slow tests: ``tools/train.py`` and ``tools/dist_train.sh`` as real processes, signalled
from here, on the toy detector (epoch-based) and segmentor (iteration-based).

* SIGTERM, SIGINT or SIGUSR1 ends the iteration in progress, saves ``iter_N.pth`` (the position inside the
  epoch in its meta), points ``last_checkpoint`` at it and exits with status 75; ``--resume`` continues
  from there, and with ``ResumableRandomnessHook`` ends with the uninterrupted run's weights bit for bit.
* A second signal during the save is ignored; SIGKILL during the save leaves the previous checkpoint,
  which ``--resume`` then takes.
* Two gloo processes stop after the same iteration whether torchrun or one worker gets the signal, and
  rank 0 writes one checkpoint.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from helpers import REPO, SMALL_SEGMENTOR, checkout_env, descendants, logged_records, small_config, toy_runner

from mmpvt.checkpoint import load_file
from mmpvt.engine import STOPPED_BY_SIGNAL

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
REPRODUCIBLE = dict(type='ResumableRandomnessHook')


@pytest.fixture(autouse=True)
def signal_handlers_as_before() -> Iterator[None]:
    """A failed test may leave a run's handlers installed: give pytest its own back."""
    saved = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    yield
    for number, handler in saved.items():
        signal.signal(number, handler)


def assert_same_state(one: Path, two: Path) -> None:
    """Same weights, buffers, optimizer state, schedulers and counters, bit for bit."""
    a, b = load_file(one), load_file(two)
    assert (a['meta']['epoch'], a['meta']['iter']) == (b['meta']['epoch'], b['meta']['iter'])
    assert a['state_dict'].keys() == b['state_dict'].keys()
    for key, value in a['state_dict'].items():
        assert torch.equal(value, b['state_dict'][key]), key
    for index, state in a['optimizer']['state'].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(value), torch.as_tensor(b['optimizer']['state'][index][name])), name
    assert a['param_schedulers'] == b['param_schedulers']


def stop(runner: object) -> None:
    with pytest.raises(SystemExit) as stopped:
        runner.train()
    assert stopped.value.code == STOPPED_BY_SIGNAL == 75


@pytest.mark.parametrize('name', ['SIGTERM', 'SIGINT', 'SIGUSR1'])
def test_a_signal_saves_the_iteration_and_the_run_continues_there(name: str, tmp_path: Path) -> None:
    reference = toy_runner(tmp_path / 'reference', custom_hooks=[REPRODUCIBLE])
    reference.train()
    before = signal.getsignal(signal.Signals[name])
    hooks = [REPRODUCIBLE, dict(type='SignalAtIterationHook', iteration=6, signal_name=name)]

    stop(toy_runner(tmp_path / 'run', custom_hooks=hooks))

    assert signal.getsignal(signal.Signals[name]) is before  # handlers given back
    saved = load_file(tmp_path / 'run' / 'iter_6.pth')
    assert (saved['meta']['epoch'], saved['meta']['iter']) == (1, 6)
    assert saved['meta']['stopped_by_signal'] == dict(signal=name, iter=6, batches_in_epoch=2)
    assert (tmp_path / 'run' / 'last_checkpoint').read_text() == str(tmp_path / 'run' / 'iter_6.pth')
    assert not (tmp_path / 'run' / 'iter_7.pth').exists()

    resumed = toy_runner(tmp_path / 'run', custom_hooks=[REPRODUCIBLE], resume=True)
    resumed.train()
    assert resumed.iter == 12
    assert_same_state(tmp_path / 'reference' / 'iter_12.pth', tmp_path / 'run' / 'iter_12.pth')
    log = sorted((tmp_path / 'run').glob('*/*.log'))[-1].read_text()
    assert f'continuing a run stopped by {name}: from iteration 6, epoch 2 at batch 3 of 4' in log


def test_a_signal_at_the_last_batch_finishes_the_epoch_on_resume(tmp_path: Path) -> None:
    reference = toy_runner(tmp_path / 'reference', custom_hooks=[REPRODUCIBLE])
    reference.train()
    stop(toy_runner(tmp_path / 'run', custom_hooks=[REPRODUCIBLE, dict(type='SignalAtIterationHook', iteration=8)]))
    assert load_file(tmp_path / 'run' / 'iter_8.pth')['meta']['stopped_by_signal']['batches_in_epoch'] == 4
    toy_runner(tmp_path / 'run', custom_hooks=[REPRODUCIBLE], resume=True).train()
    assert_same_state(tmp_path / 'reference' / 'iter_12.pth', tmp_path / 'run' / 'iter_12.pth')


def test_a_signal_during_validation_stops_it_and_keeps_the_trained_epoch(tmp_path: Path) -> None:
    hooks = [REPRODUCIBLE, dict(type='SignalAtIterationHook', iteration=4, in_validation=True)]
    stop(toy_runner(tmp_path / 'run', custom_hooks=hooks, validate=True))

    saved = load_file(tmp_path / 'run' / 'iter_4.pth')
    assert (saved['meta']['epoch'], saved['meta']['iter']) == (1, 4)  # epoch 1 trained; its validation not done
    assert saved['meta']['stopped_by_signal']['batches_in_epoch'] == 0
    resumed = toy_runner(tmp_path / 'run', custom_hooks=[REPRODUCIBLE], resume=True, validate=True)
    resumed.train()
    assert resumed.iter == 12 and resumed.epoch == 3


def test_a_second_signal_during_the_save_is_ignored(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    hooks = [dict(type='SignalAtIterationHook', iteration=5, again=True)]
    stop(toy_runner(tmp_path, custom_hooks=hooks))

    stderr = capfd.readouterr().err
    assert '[rank 0] SIGTERM received: finishing the iteration in progress, then saving a checkpoint' in stderr
    assert '[rank 0] SIGTERM received while stopping: ignored, the checkpoint is being saved' in stderr
    assert load_file(tmp_path / 'iter_5.pth')['meta']['stopped_by_signal']['iter'] == 5
    assert not list(tmp_path.glob('.*.tmp'))


def test_a_run_without_a_signal_is_unchanged(tmp_path: Path) -> None:
    before = {number: signal.getsignal(number) for number in STOP_SIGNALS}
    toy_runner(tmp_path).train()
    assert {number: signal.getsignal(number) for number in STOP_SIGNALS} == before
    assert 'stopped_by_signal' not in load_file(tmp_path / 'iter_12.pth')['meta']


# --- real processes ---------------------------------------------------------------------------------

ENV = checkout_env(extra_path=(REPO / 'tests',), OMP_NUM_THREADS='1')
TEST_HOOKS = "custom_imports = dict(imports=['mmpvt', 'helpers'], allow_failed_imports=False)\n"


def start(command: list[str], log: Path, **env: str) -> subprocess.Popen:
    with log.open('w') as out:
        return subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env={**ENV, **env})


def train(config: Path, work_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, 'tools/train.py', str(config), '--work-dir', str(work_dir), *extra]


def finished(process: subprocess.Popen, log: Path, status: int = 0) -> str:
    process.wait(timeout=900)
    text = log.read_text()
    assert process.returncode == status, text[-3000:]
    return text


def logged_iterations(work_dir: Path) -> list[int]:
    return [record['iter'] for record in logged_records(work_dir) if 'loss' in record]


def wait_for_iteration(work_dir: Path, process: subprocess.Popen, iteration: int) -> None:
    """Until the run has logged training iteration ``iteration`` (bounded by the run's own end)."""
    while not any(i >= iteration for i in logged_iterations(work_dir)):
        assert process.poll() is None, 'the run ended before the iteration'
        time.sleep(0.1)


def signal_at(process: subprocess.Popen, work_dir: Path, iteration: int, pid: int | None = None) -> float:
    """SIGTERM to ``pid`` (the process) once the run logged ``iteration``; the time it was sent."""
    wait_for_iteration(work_dir, process, iteration)
    os.kill(pid or process.pid, signal.SIGTERM)
    return time.monotonic()


def stopped_at(log: str) -> int:
    (iteration,) = re.findall(r'stopped by SIGTERM(?: \([^)]*\))? after iteration (\d+)', log)
    return int(iteration)


def assert_finished_the_iteration_in_progress(log: str) -> None:
    """Between the signal's arrival and the stop, at most the one iteration in progress is logged."""
    after = log.split('SIGTERM received: finishing the iteration in progress')[1].split('stopped by SIGTERM')[0]
    assert len(re.findall(r'(?:Epoch|Iter)\(train\)', after)) <= 1, after


@pytest.fixture(scope='module')
def detector(toy_coco: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Epoch-based toy RetinaNet (5 epochs of 4 iterations): an uninterrupted run, one stopped by SIGTERM in
    epoch 2, and one killed by SIGKILL while that checkpoint was being written."""
    root = tmp_path_factory.mktemp('detector')
    config = small_config(root / 'small.py', toy_coco)
    with config.open('a') as f:
        f.write(TEST_HOOKS + "custom_hooks = [dict(type='ResumableRandomnessHook')]\n")
    slow = root / 'slow_save.py'
    hooks = "custom_hooks = [dict(type='ResumableRandomnessHook'), dict(type='SlowStopCheckpointHook')]\n"
    slow.write_text(f"_base_ = '{config}'\n{hooks}")
    dirs = {name: root / name for name in ('reference', 'stopped', 'killed')}
    reference = start(train(config, dirs['reference']), root / 'reference.log')

    stopped = start(train(config, dirs['stopped']), root / 'stopped.log')
    sent = signal_at(stopped, dirs['stopped'], 5)
    finished(stopped, root / 'stopped.log', STOPPED_BY_SIGNAL)
    print(f'SIGTERM to exit: {time.monotonic() - sent:.1f} s (toy detector, one thread)')

    killed = start(train(slow, dirs['killed']), root / 'killed.log')
    signal_at(killed, dirs['killed'], 5)
    while not (dirs['killed'] / 'saving').exists():  # the checkpoint's bytes are written, its rename is not
        assert killed.poll() is None, (root / 'killed.log').read_text()[-3000:]
        time.sleep(0.1)
    killed.kill()
    finished(killed, root / 'killed.log', -signal.SIGKILL)

    finished(reference, root / 'reference.log')
    return {**dirs, 'config': config, 'root': root}


@pytest.mark.slow
def test_sigterm_stops_the_detector_after_the_iteration_in_progress(detector: dict[str, Path]) -> None:
    log = (detector['root'] / 'stopped.log').read_text()
    iteration = stopped_at(log)
    assert 5 <= iteration <= 8, log[-3000:]  # inside epoch 2, whose checkpoint is not due yet
    assert_finished_the_iteration_in_progress(log)
    work_dir = detector['stopped']
    assert f'checkpoint {work_dir / f"iter_{iteration}.pth"}; exit status 75 (stopped by signal, resumable)' in log
    assert (work_dir / 'last_checkpoint').read_text() == str(work_dir / f'iter_{iteration}.pth')
    meta = load_file(work_dir / f'iter_{iteration}.pth')['meta']
    assert (meta['epoch'], meta['iter']) == (1, iteration)
    assert meta['stopped_by_signal']['batches_in_epoch'] == iteration - 4
    assert 'Traceback' not in log


@pytest.mark.slow
def test_the_resumed_detector_ends_with_the_uninterrupted_weights(detector: dict[str, Path]) -> None:
    work_dir = detector['stopped']
    iteration = stopped_at((detector['root'] / 'stopped.log').read_text())
    log = finished(
        start(train(detector['config'], work_dir, '--resume'), detector['root'] / 'resumed.log'),
        detector['root'] / 'resumed.log',
    )
    batch = iteration - 4 + 1
    assert f'continuing a run stopped by SIGTERM: from iteration {iteration}, epoch 2 at batch {batch} of 4' in log
    assert_same_state(detector['reference'] / 'epoch_5.pth', work_dir / 'epoch_5.pth')


@pytest.mark.slow
def test_sigkill_during_the_save_keeps_the_previous_checkpoint(detector: dict[str, Path]) -> None:
    work_dir = detector['killed']
    (partial,) = work_dir.glob('.iter_*.pth.*.tmp')  # the stop checkpoint, written but never renamed
    assert not list(work_dir.glob('iter_*.pth'))
    assert (work_dir / 'last_checkpoint').read_text() == str(work_dir / 'epoch_1.pth')
    load_file(work_dir / 'epoch_1.pth')
    assert partial.stat().st_size > 0

    log = finished(
        start(train(detector['config'], work_dir, '--resume'), detector['root'] / 'after_kill.log'),
        detector['root'] / 'after_kill.log',
    )
    assert 'resumed epoch: 1, iter: 4' in log
    assert_same_state(detector['reference'] / 'epoch_5.pth', work_dir / 'epoch_5.pth')


#: The toy Semantic FPN made small: iteration-based, 12 iterations of 4 images, a checkpoint every 4.
SEGMENTOR = (
    SMALL_SEGMENTOR
    + """train_cfg = dict(max_iters=12, val_interval=1000)
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=4))
randomness = dict(seed=0, deterministic=True)
custom_hooks = [dict(type='ResumableRandomnessHook')]
"""
)


@pytest.mark.slow
def test_the_iteration_based_segmentor_stops_and_resumes_bit_for_bit(toy_ade: Path, tmp_path: Path) -> None:
    config = tmp_path / 'seg.py'
    config.write_text(SEGMENTOR.format(base=REPO / 'configs/toy/fpn_pvt_t_toy_ade.py', data_root=toy_ade))
    reference = start(train(config, tmp_path / 'reference'), tmp_path / 'reference.log')
    stopped = start(train(config, tmp_path / 'run'), tmp_path / 'stopped.log')
    signal_at(stopped, tmp_path / 'run', 5)
    log = finished(stopped, tmp_path / 'stopped.log', STOPPED_BY_SIGNAL)
    iteration = stopped_at(log)
    assert_finished_the_iteration_in_progress(log)
    assert load_file(tmp_path / 'run' / f'iter_{iteration}.pth')['meta']['iter'] == iteration

    log = finished(
        start(train(config, tmp_path / 'run', '--resume'), tmp_path / 'resumed.log'), tmp_path / 'resumed.log'
    )
    finished(reference, tmp_path / 'reference.log')

    assert f'continuing a run stopped by SIGTERM: from iteration {iteration}\n' in log
    assert_same_state(tmp_path / 'reference' / 'iter_12.pth', tmp_path / 'run' / 'iter_12.pth')


# --- two gloo processes under tools/dist_train.sh ----------------------------------------------------


def worker_pids(launcher: int) -> dict[int, int]:
    """rank -> pid of the training processes under ``launcher``."""
    ranks = {}
    for pid in descendants(launcher):
        try:
            environ = Path(f'/proc/{pid}/environ').read_bytes().split(b'\0')
            cmdline = Path(f'/proc/{pid}/cmdline').read_bytes()
        except OSError:
            continue
        rank = [int(item[5:]) for item in environ if item.startswith(b'RANK=')]
        if rank and b'tools/train.py' in cmdline and b'torch.distributed.run' not in cmdline:
            ranks[rank[0]] = pid
    return ranks


def dist_train(config: Path, work_dir: Path, log: Path, *extra: str) -> subprocess.Popen:
    import socket

    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    command = ['bash', 'tools/dist_train.sh', str(config), '2', '--work-dir', str(work_dir), *extra]
    return start(command, log, PORT=str(port), PYTHON=sys.executable)


@pytest.mark.slow
@pytest.mark.parametrize('target', ['torchrun', 'rank 1'])
def test_two_processes_stop_after_the_same_iteration(target: str, toy_coco: Path, tmp_path: Path) -> None:
    """SIGTERM to torchrun (it forwards it to both workers), or to one worker alone: both ranks stop together."""
    config = small_config(tmp_path / 'small.py', toy_coco, max_epochs=6)  # 2 iterations per epoch on 2 ranks
    with config.open('a') as f:
        f.write("env_cfg = dict(dist_cfg=dict(backend='gloo', timeout=120))\n")
    work_dir = tmp_path / 'work'
    process = dist_train(config, work_dir, tmp_path / 'dist.log')
    wait_for_iteration(work_dir, process, 3)
    pid = process.pid if target == 'torchrun' else worker_pids(process.pid)[1]
    torchrun = [
        p for p in descendants(process.pid) if b'torch.distributed.run' in Path(f'/proc/{p}/cmdline').read_bytes()
    ]
    os.kill(torchrun[0] if target == 'torchrun' else pid, signal.SIGTERM)
    process.wait(timeout=600)  # no hang: a rank left waiting in a collective would hold it here
    log = (tmp_path / 'dist.log').read_text()

    assert process.returncode != 0, log[-3000:]  # torchrun reports workers that exit 75 as failed
    iteration = stopped_at(log)
    assert f'[rank 1] stopped by signal after iteration {iteration} ' in log  # the same iteration on both ranks
    got = 'SIGTERM on rank 0, SIGTERM on rank 1' if target == 'torchrun' else 'SIGTERM on rank 1'
    assert f'stopped by SIGTERM ({got}) after iteration {iteration}' in log
    assert sorted(p.name for p in work_dir.glob('iter_*.pth')) == [f'iter_{iteration}.pth']  # one checkpoint
    assert (work_dir / 'last_checkpoint').read_text() == str(work_dir / f'iter_{iteration}.pth')

    resumed = dist_train(config, work_dir, tmp_path / 'resumed.log', '--resume')
    log = finished(resumed, tmp_path / 'resumed.log')
    assert f'continuing a run stopped by SIGTERM: from iteration {iteration}' in log
    assert load_file(work_dir / 'epoch_6.pth')['meta']['iter'] == 12


@pytest.mark.slow
def test_mmseg_own_train_py_stops_and_resumes_when_the_config_names_the_hook(toy_ade: Path, tmp_path: Path) -> None:
    """mmseg's tools/train.py (the wheel's copy): the config names the hooks; the signal comes at iteration 5."""
    import mmseg

    tool = Path(mmseg.__file__).parent / '.mim' / 'tools' / 'train.py'
    config = tmp_path / 'seg.py'
    config.write_text(SEGMENTOR.format(base=REPO / 'configs/toy/fpn_pvt_t_toy_ade.py', data_root=toy_ade))
    with config.open('a') as f:
        f.write(TEST_HOOKS + "custom_hooks.append(dict(type='StopOnSignalHook'))\n")
    signalled = tmp_path / 'signalled.py'
    signalled.write_text(
        f"_base_ = '{config}'\ncustom_hooks = [dict(type='ResumableRandomnessHook'), dict(type='StopOnSignalHook'), "
        "dict(type='SignalAtIterationHook', iteration=5)]\n"
    )
    work_dir = tmp_path / 'work'
    command = [sys.executable, str(tool), str(signalled), '--work-dir', str(work_dir)]
    log = finished(start(command, tmp_path / 'stopped.log'), tmp_path / 'stopped.log', STOPPED_BY_SIGNAL)
    assert 'stopped by SIGTERM after iteration 5' in log
    assert (work_dir / 'last_checkpoint').read_text() == str(work_dir / 'iter_5.pth')

    command = [sys.executable, str(tool), str(config), '--work-dir', str(work_dir), '--resume']
    log = finished(start(command, tmp_path / 'resumed.log'), tmp_path / 'resumed.log')
    assert 'continuing a run stopped by SIGTERM: from iteration 5' in log
    assert load_file(work_dir / 'iter_12.pth')['meta']['iter'] == 12
