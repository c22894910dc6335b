"""Faults a training run survives, each on toy COCO with the real Runner through tools/train.py.

* Killed by the kernel in the middle of writing a checkpoint: the work dir holds only whole
  checkpoints (the partial one is a hidden temporary file), and ``--resume`` (auto, or a given
  checkpoint) continues from the last whole one and ends with the weights, optimizer and scheduler
  state of a run that was never interrupted.
* A truncated checkpoint is never resumed from: the previous readable one is, with a warning.
* The ``atomic_local`` file backend on its own: killed or failing mid-write, it leaves the old file.
* Two runs with the same seed log identical losses for the first 20 iterations.
* A work dir holding another run's checkpoints is not overwritten without ``--resume``.

What makes CPU runs repeatable: ``randomness=dict(seed=0, deterministic=True)``, ``num_workers=0``,
``OMP_NUM_THREADS=1``, and the ``ResumableRandomnessHook`` that these runs' config names (opt-in: the
global generators reseeded from (seed, epoch) and (seed, iteration), which a checkpoint restores).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import MAX_EPOCHS, REPO, checkout_env, descendants, logged_records, small_config

from mmpvt.checkpoint import allow_mmengine_checkpoints, load_file
from mmpvt.engine.fileio import AtomicLocalBackend
from mmpvt.launch.resume import latest_readable_checkpoint


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def train_command(config: Path, work_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, 'tools/train.py', str(config), '--work-dir', str(work_dir), *extra]


ENV = checkout_env(OMP_NUM_THREADS='1')


def start(command: list[str], log: Path) -> subprocess.Popen:
    with log.open('w') as out:
        return subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=ENV)


def finish(process: subprocess.Popen, log: Path, timeout: float = 600) -> str:
    process.wait(timeout=timeout)
    text = log.read_text()
    assert process.returncode == 0, text[-3000:]
    return text


def run(command: list[str], log: Path) -> str:
    return finish(start(command, log), log)


def logged_losses(work_dir: Path) -> dict[int, float]:
    """iteration -> loss over every run (timestamped folder) of a work dir."""
    return {record['iter']: record['loss'] for record in logged_records(work_dir) if 'loss' in record}


def copy_run(source: Path, target: Path) -> Path:
    """Copy a work dir; its ``last_checkpoint`` (an absolute path) is pointed at the copy."""
    shutil.copytree(source, target)
    pointer = target / 'last_checkpoint'
    pointer.write_text(str(target / Path(pointer.read_text().strip()).name))
    return target


def assert_same_checkpoint(a: Path, b: Path) -> None:
    """Same weights, optimizer state, scheduler state and counters, tensor for tensor."""
    one, two = load_file(a), load_file(b)
    assert one['meta']['iter'] == two['meta']['iter'] and one['meta']['epoch'] == two['meta']['epoch']
    assert one['state_dict'].keys() == two['state_dict'].keys()
    for key, value in one['state_dict'].items():
        assert torch.equal(value, two['state_dict'][key]), key
    for key, value in one['optimizer']['state'].items():
        for name, tensor in value.items():
            assert torch.equal(torch.as_tensor(tensor), torch.as_tensor(two['optimizer']['state'][key][name]))
    assert one['param_schedulers'] == two['param_schedulers']


#: The killed run dies while writing this epoch's checkpoint (the last one): epoch MAX_EPOCHS - 1 is its last whole one.
KILL_EPOCH = MAX_EPOCHS

#: A hook the killed run's config imports: once epoch KILL_EPOCH has trained, it lowers the process's file size limit
#: to half a checkpoint and gives SIGXFSZ back its default action (Python ignores it), so the kernel kills the process
#: (no Python code runs any more) in the middle of writing that epoch's checkpoint. Logs stay far below the limit.
KILLER_MODULE = """
import resource
import signal
from pathlib import Path

from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class KillMidCheckpointHook(Hook):
    priority = 'NORMAL'  # after_train_epoch runs before CheckpointHook's (VERY_LOW)

    def __init__(self, epoch):
        self.epoch = epoch

    def after_train_epoch(self, runner):
        if runner.epoch + 1 != self.epoch:
            return
        limit = (Path(runner.work_dir) / f'epoch_{self.epoch - 1}.pth').stat().st_size // 2
        (Path(runner.work_dir) / 'size_limit').write_text(str(limit))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
"""


#: What a config names to resume as if never interrupted (our tools no longer add it on their own).
REPRODUCIBLE_RESUME = "dict(type='ResumableRandomnessHook')"


def killer_config(config: Path) -> tuple[Path, Path]:
    """(config, folder of its hook module): ``config`` plus the hook that kills the run mid-checkpoint."""
    folder = config.parent / 'killer'
    folder.mkdir()
    (folder / 'kill_mid_checkpoint.py').write_text(KILLER_MODULE)
    killer = config.parent / 'killer.py'
    killer.write_text(
        f"_base_ = '{config}'\n"
        "custom_imports = dict(imports=['mmpvt', 'kill_mid_checkpoint'], allow_failed_imports=False)\n"
        f"custom_hooks = [{REPRODUCIBLE_RESUME}, dict(type='KillMidCheckpointHook', epoch={KILL_EPOCH})]\n"
    )
    return killer, folder


@pytest.fixture(scope='module')
def runs(toy_coco: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Three runs at once (independent processes): two uninterrupted ones and one killed mid-checkpoint."""
    root = tmp_path_factory.mktemp('runs')
    config = small_config(root / 'small.py', toy_coco)
    with config.open('a') as f:
        f.write(f'custom_hooks = [{REPRODUCIBLE_RESUME}]\n')
    dirs = {name: root / name for name in ('reference', 'again', 'killed')}
    processes = {
        name: start(train_command(config, dirs[name]), root / f'{name}.log') for name in ('reference', 'again')
    }
    killer, hook_folder = killer_config(config)
    with (root / 'killed.log').open('w') as out:
        command = train_command(killer, dirs['killed'])
        env = checkout_env(extra_path=(hook_folder,), OMP_NUM_THREADS='1')
        killed = subprocess.Popen(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
    killed.wait(timeout=600)
    assert killed.returncode == -signal.SIGXFSZ, (root / 'killed.log').read_text()[-3000:]
    for name in ('reference', 'again'):
        finish(processes[name], root / f'{name}.log')
    return {**dirs, 'config': config, 'root': root}


@pytest.mark.slow
def test_same_seed_same_losses(runs: dict[str, Path]) -> None:
    first, second = logged_losses(runs['reference']), logged_losses(runs['again'])
    assert sorted(first) == list(range(1, 4 * MAX_EPOCHS + 1))
    assert [first[i] for i in range(1, 21)] == [second[i] for i in range(1, 21)]


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_weights(runs: dict[str, Path]) -> None:
    final = f'epoch_{MAX_EPOCHS}.pth'
    auto = runs['root'] / 'auto'
    explicit = runs['root'] / 'explicit'
    copy_run(runs['killed'], auto)
    copy_run(runs['killed'], explicit)
    assert not (auto / final).exists()

    resumed = start(train_command(runs['config'], auto, '--resume', 'auto'), runs['root'] / 'auto.log')
    given = train_command(runs['config'], explicit, '--resume', str(explicit / f'epoch_{MAX_EPOCHS - 1}.pth'))
    run(given, runs['root'] / 'explicit.log')
    log = finish(resumed, runs['root'] / 'auto.log')

    assert f'resumed epoch: {MAX_EPOCHS - 1}, iter: {4 * (MAX_EPOCHS - 1)}' in log
    assert_same_checkpoint(runs['reference'] / final, auto / final)
    assert_same_checkpoint(runs['reference'] / final, explicit / final)
    # the resumed run logs the losses the uninterrupted one logged
    reference, losses = logged_losses(runs['reference']), logged_losses(auto)
    assert [losses[i] for i in range(1, 21)] == [reference[i] for i in range(1, 21)]


@pytest.mark.slow
def test_truncated_checkpoint_falls_back_to_the_previous_one(runs: dict[str, Path]) -> None:
    work_dir = runs['root'] / 'truncated'
    copy_run(runs['killed'], work_dir)
    latest = work_dir / f'epoch_{MAX_EPOCHS - 1}.pth'
    latest.write_bytes(latest.read_bytes()[: latest.stat().st_size // 2])
    assert (work_dir / 'last_checkpoint').read_text().strip().endswith(latest.name)

    log = run(train_command(runs['config'], work_dir, '--resume'), runs['root'] / 'truncated.log')

    assert f'skipping unreadable checkpoint {latest}' in log
    assert f'resuming from {work_dir / f"epoch_{MAX_EPOCHS - 2}.pth"} instead' in log
    assert_same_checkpoint(runs['reference'] / f'epoch_{MAX_EPOCHS}.pth', work_dir / f'epoch_{MAX_EPOCHS}.pth')


@pytest.mark.slow
def test_a_checkpoint_killed_mid_write_is_never_taken(runs: dict[str, Path]) -> None:
    """The kill landed in the middle of the last checkpoint: only whole checkpoints carry a checkpoint's name."""
    killed = runs['killed']
    whole = [f'epoch_{i}.pth' for i in range(1, KILL_EPOCH)]
    assert sorted(p.name for p in killed.glob('*.pth')) == whole
    for path in killed.glob('*.pth'):
        load_file(path)
    # the partial file is a hidden temporary one, cut at the size limit: the process died writing it
    (partial,) = killed.glob(f'.epoch_{KILL_EPOCH}.pth.*.tmp')
    assert partial.stat().st_size == int((killed / 'size_limit').read_text())
    assert (killed / 'last_checkpoint').read_text().strip() == str(killed / whole[-1])
    assert latest_readable_checkpoint(str(killed)) == str(killed / whole[-1])
    assert not list(runs['reference'].glob('.*.tmp'))  # an uninterrupted run leaves no temporary file


def failed(command: list[str], cwd: Path = REPO) -> str:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600, env=ENV)
    assert result.returncode != 0, result.stdout[-2000:]
    return result.stderr


@pytest.mark.slow
def test_work_dir_with_checkpoints_is_not_overwritten(runs: dict[str, Path]) -> None:
    work_dir = runs['reference']
    before = {p: p.stat().st_mtime_ns for p in work_dir.glob('*.pth')}
    stderr = failed(train_command(runs['config'], work_dir))
    assert f'work dir {work_dir} already holds checkpoints of another run' in stderr
    assert '--resume' in stderr and '--work-dir' in stderr
    assert {p: p.stat().st_mtime_ns for p in work_dir.glob('*.pth')} == before


@pytest.mark.slow
def test_resume_from_unreadable_or_missing_files(runs: dict[str, Path], tmp_path: Path) -> None:
    missing = tmp_path / 'nope.pth'
    stderr = failed(train_command(runs['config'], tmp_path / 'w1', '--resume', str(missing)))
    assert f'checkpoint file not found: {missing}' in stderr

    truncated = tmp_path / 'half.pth'
    whole = (runs['reference'] / 'epoch_1.pth').read_bytes()
    truncated.write_bytes(whole[: len(whole) // 3])
    stderr = failed(train_command(runs['config'], tmp_path / 'w2', '--resume', str(truncated)))
    assert f'--resume: cannot read checkpoint {truncated}: the file is truncated or corrupt' in stderr

    work_dir = tmp_path / 'all_bad'
    work_dir.mkdir()
    (work_dir / 'epoch_1.pth').write_bytes(whole[:100])
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'epoch_1.pth'))
    stderr = failed(train_command(runs['config'], work_dir, '--resume'))
    assert f'no readable checkpoint in {work_dir}' in stderr


@pytest.mark.usefixtures('no_safe_globals')
def test_load_file_keeps_the_process_allow_list(tmp_path: Path) -> None:
    """load_file must not drop what allow_mmengine_checkpoints allowed for mmengine's own torch.load."""
    allow_mmengine_checkpoints()
    before = set(torch.serialization.get_safe_globals())  # a set inside torch: its list order is arbitrary
    torch.save({'w': torch.ones(1)}, tmp_path / 'a.pth')
    load_file(tmp_path / 'a.pth')
    assert set(torch.serialization.get_safe_globals()) == before


#: Writes 10000 bytes through the atomic backend over argv[1] with a 4096-byte file size limit; with argv[2] == 'kill'
#: the kernel kills the process at the limit (SIGXFSZ's default action), else the write fails with EFBIG.
LIMITED_WRITE = """
import resource, signal, sys
from mmpvt.engine.fileio import AtomicLocalBackend
if sys.argv[2] == 'kill':
    signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
resource.setrlimit(resource.RLIMIT_FSIZE, (4096, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
AtomicLocalBackend().put(b'n' * 10000, sys.argv[1])
"""


def limited_write(target: Path, how: str) -> subprocess.CompletedProcess:
    command = [sys.executable, '-c', LIMITED_WRITE, str(target), how]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, env=checkout_env())


def test_atomic_backend_replaces_the_file_whole(tmp_path: Path) -> None:
    target = tmp_path / 'epoch_1.pth'
    target.write_bytes(b'old')
    AtomicLocalBackend().put(b'new' * 1000, target)
    assert target.read_bytes() == b'new' * 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ['epoch_1.pth']


def test_atomic_backend_killed_mid_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / 'epoch_1.pth'
    target.write_bytes(b'old')
    result = limited_write(target, 'kill')
    assert result.returncode == -signal.SIGXFSZ, result.stderr[-2000:]
    assert target.read_bytes() == b'old'
    (partial,) = tmp_path.glob('.epoch_1.pth.*.tmp')  # nobody was left to remove it; nothing takes it for a checkpoint
    assert partial.stat().st_size == 4096


def test_atomic_backend_failing_mid_write_keeps_the_old_file_and_removes_the_temporary(tmp_path: Path) -> None:
    target = tmp_path / 'epoch_1.pth'
    target.write_bytes(b'old')
    result = limited_write(target, 'fail')
    assert result.returncode == 1 and 'File too large' in result.stderr, result.stderr[-2000:]
    assert target.read_bytes() == b'old'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['epoch_1.pth']


def rank_of(pid: int) -> int | None:
    try:
        environ = Path(f'/proc/{pid}/environ').read_bytes().split(b'\0')
    except OSError:
        return None
    ranks = [int(item[5:]) for item in environ if item.startswith(b'RANK=')]
    return ranks[0] if ranks else None


def wait_for_training(work_dir: Path, process: subprocess.Popen, timeout: float = 600) -> None:
    """Until the run has logged its first iteration."""
    deadline = time.monotonic() + timeout
    while not any(p.stat().st_size for p in work_dir.glob('*/vis_data/scalars.json')):
        assert process.poll() is None, 'the run ended before training'
        assert time.monotonic() < deadline, 'training did not start'
        time.sleep(0.2)


@pytest.mark.slow
def test_dead_rank_ends_a_distributed_run(toy_coco: Path, tmp_path: Path) -> None:
    """tools/dist_train.sh, 2 CPU processes: SIGKILL rank 1 mid-run; the run ends (no hang) with an error."""
    config = small_config(tmp_path / 'small.py', toy_coco, max_epochs=100)
    with config.open('a') as f:
        f.write("env_cfg = dict(dist_cfg=dict(backend='gloo', timeout=60))\n")
    port = str(free_port())
    log = tmp_path / 'dist.log'
    command = ['bash', 'tools/dist_train.sh', str(config), '2', '--work-dir', str(tmp_path / 'work')]
    with log.open('w') as out:
        process = subprocess.Popen(
            command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env={**ENV, 'PORT': port, 'PYTHON': sys.executable}
        )
    wait_for_training(tmp_path / 'work', process)
    workers = {rank_of(pid): pid for pid in descendants(process.pid)}
    survivor = workers[0]
    os.kill(workers[1], signal.SIGKILL)
    killed_at = time.monotonic()
    process.wait(timeout=600)
    elapsed = time.monotonic() - killed_at

    text = log.read_text()
    assert process.returncode != 0, text[-3000:]
    assert 'ChildFailedError' in text and 'exitcode  : -9' in text, text[-3000:]
    assert not Path(f'/proc/{survivor}').exists() or 'Z' in Path(f'/proc/{survivor}/stat').read_text().split()[2]
    print(f'distributed run ended {elapsed:.1f} s after rank 1 was killed')
