"""The launch scripts and tools/test.py's options, on the CPU.

* tools/slurm_{train,test}.sh hand srun the partition, job name, task counts, SRUN_ARGS, the
  python command with ``--launcher=slurm``, and PORT as MASTER_PORT (a fake ``srun`` on PATH
  records what it was given).
* tools/slurm_batch.sh submits itself with ``--requeue`` and ``--signal=B:USR1@120``; in the job it
  passes the warning on to training, requeues the job when training stopped on it (status 75), and the
  requeued job resumes (fake ``sbatch``, ``scontrol`` and ``srun`` on PATH; the training is real).
* tools/dist_{train,test}.sh hand torchrun NNODES, NODE_RANK, MASTER_ADDR and PORT (a fake
  PYTHON records the command), and ``dist_test.sh`` really tests a tiny detector with 2 gloo
  processes.
* ``tools/test.py --show-dir`` draws every test image.
"""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import REPO, checkout_env, logged_records, logged_test_metrics, small_config

#: Stands in for srun: records its arguments and environment, starts nothing.
FAKE_SRUN = """#!/usr/bin/env bash
printf '%s\\n' "$@" > "$RECORD_DIR/argv"
env -0 > "$RECORD_DIR/env"
"""

#: Stands in for the interpreter of tools/dist_*.sh: records its arguments, then runs the real
#: interpreter with them when REAL_PYTHON is set.
FAKE_PYTHON = """#!/usr/bin/env bash
printf '%s\\n' "$@" > "$RECORD_DIR/argv"
if [ -n "${REAL_PYTHON:-}" ]; then exec "$REAL_PYTHON" "$@"; fi
"""

#: The launcher variables the scripts read; removed from the environment of every test run.
LAUNCH_VARS = ('GPUS', 'GPUS_PER_NODE', 'CPUS_PER_TASK', 'SRUN_ARGS', 'GRES', 'PORT', 'MASTER_PORT')
LAUNCH_VARS += ('MASTER_ADDR', 'NNODES', 'NODE_RANK', 'PYTHON', 'REAL_PYTHON')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return sock.getsockname()[1]


def fake_command(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(text)
    path.chmod(0o755)
    return path


def run_script(command: list[str], record_dir: Path, timeout: float = 60, **env: str) -> str:
    """Run ``command`` in the repository with ``env`` on top of a clean launch environment; its output."""
    base = {k: v for k, v in checkout_env().items() if k not in LAUNCH_VARS}
    full_env = {**base, 'RECORD_DIR': str(record_dir), **env}
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=full_env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout + result.stderr


def recorded_argv(record_dir: Path) -> list[str]:
    return (record_dir / 'argv').read_text().splitlines()


def recorded_env(record_dir: Path) -> dict[str, str]:
    entries = (record_dir / 'env').read_bytes().decode().split('\0')
    return dict(entry.split('=', 1) for entry in entries if '=' in entry)


# script -> (its two positional arguments after PARTITION JOB_NAME, python arguments they become)
SLURM_SCRIPTS = {
    'slurm_train.sh': (['configs/a.py', 'work_dirs/a'], ['tools/train.py', 'configs/a.py', '--work-dir=work_dirs/a']),
    'slurm_test.sh': (['configs/a.py', 'a.pth'], ['tools/test.py', 'configs/a.py', 'a.pth']),
}


def expected_python(script: str, python: str) -> list[str]:
    tool, *args = SLURM_SCRIPTS[script][1]
    return [python, '-u', str(REPO / tool), *args, '--launcher=slurm']


@pytest.mark.parametrize('script', list(SLURM_SCRIPTS))
def test_slurm_script_hands_srun_the_job(script: str, tmp_path: Path) -> None:
    bin_dir = tmp_path / 'bin'
    fake_command(bin_dir, 'srun', FAKE_SRUN)
    settings = dict(GPUS='16', GPUS_PER_NODE='4', CPUS_PER_TASK='3', SRUN_ARGS='--quotatype=auto --time=5')
    command = ['bash', f'tools/{script}', 'dev', 'pvt_job', *SLURM_SCRIPTS[script][0], '--cfg-options', 'a=1']
    path = f'{bin_dir}{os.pathsep}{os.environ["PATH"]}'
    run_script(command, tmp_path, PATH=path, PORT='23456', PYTHON='python3.11', **settings)

    assert recorded_argv(tmp_path) == [
        '-p',
        'dev',
        '--job-name=pvt_job',
        '--gres=gpu:4',
        '--ntasks=16',
        '--ntasks-per-node=4',
        '--cpus-per-task=3',
        '--kill-on-bad-exit=1',
        '--quotatype=auto',
        '--time=5',
        *expected_python(script, 'python3.11'),
        '--cfg-options',
        'a=1',
    ]
    env = recorded_env(tmp_path)
    assert env['MASTER_PORT'] == '23456'  # what mmengine's slurm initialisation and ours read
    assert {k: env[k] for k in settings} == settings
    assert Path(env['PYTHONPATH'].split(os.pathsep)[0]).resolve() == REPO


@pytest.mark.parametrize('script', list(SLURM_SCRIPTS))
def test_slurm_script_defaults(script: str, tmp_path: Path) -> None:
    bin_dir = tmp_path / 'bin'
    fake_command(bin_dir, 'srun', FAKE_SRUN)
    command = ['bash', f'tools/{script}', 'dev', 'pvt_job', *SLURM_SCRIPTS[script][0]]
    run_script(command, tmp_path, PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}')

    argv = recorded_argv(tmp_path)
    assert argv[:6] == ['-p', 'dev', '--job-name=pvt_job', '--gres=gpu:8', '--ntasks=8', '--ntasks-per-node=8']
    assert argv[6:] == ['--cpus-per-task=5', '--kill-on-bad-exit=1', *expected_python(script, 'python3')]
    assert recorded_env(tmp_path)['MASTER_PORT'] == '29500'

    # a CPU partition: GRES set empty asks for no GPUs
    run_script(command, tmp_path, PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}', GRES='')
    assert not [a for a in recorded_argv(tmp_path) if a.startswith('--gres')]


#: Stands in for sbatch and scontrol: records each call's arguments, one per line, a blank line after each
#: call; ``scontrol show hostname`` prints this machine (what mmengine's and our slurm set-up ask it).
FAKE_SLURM_COMMAND = """#!/usr/bin/env bash
{ printf '%s\\n' "$@"; echo; } >> "$RECORD_DIR/$(basename "$0")"
if [ "${1:-} ${2:-}" = "show hostname" ]; then echo 127.0.0.1; fi
"""

#: Stands in for srun inside a job: records its arguments, then runs the command as the one task.
FAKE_JOB_SRUN = """#!/usr/bin/env bash
printf '%s\\n' "$@" > "$RECORD_DIR/srun"
while [[ $1 == --* ]]; do shift; done
SLURM_PROCID=0 SLURM_LOCALID=0 SLURM_NTASKS=1 SLURM_NODELIST=node1 exec "$@"
"""


def recorded_calls(record_dir: Path, command: str) -> list[list[str]]:
    return [call.splitlines() for call in (record_dir / command).read_text().split('\n\n') if call]


def test_slurm_batch_asks_for_the_warning_and_requeueing(tmp_path: Path) -> None:
    bin_dir = tmp_path / 'bin'
    fake_command(bin_dir, 'sbatch', FAKE_SLURM_COMMAND)
    command = ['bash', 'tools/slurm_batch.sh', 'dev', 'pvt_job', 'configs/a.py', str(tmp_path / 'w'), '--amp']
    run_script(command, tmp_path, PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}', GPUS='16', TIME='3-00:00:00')

    (argv,) = recorded_calls(tmp_path, 'sbatch')
    assert argv == [
        '--partition=dev',
        '--job-name=pvt_job',
        '--gres=gpu:8',
        '--ntasks=16',
        '--ntasks-per-node=8',
        '--cpus-per-task=5',
        '--time=3-00:00:00',
        '--requeue',
        '--signal=B:USR1@120',
        '--open-mode=append',
        f'--output={tmp_path / "w"}/slurm-%j.out',
        str(REPO / 'tools/slurm_batch.sh'),
        '--in-job',
        str(REPO / 'tools'),
        'configs/a.py',
        str(tmp_path / 'w'),
        '--amp',
    ]
    assert (tmp_path / 'w').is_dir()  # for the job's output file


def batch_job(config: Path, work_dir: Path, record_dir: Path, restarts: int = 0) -> subprocess.Popen:
    """tools/slurm_batch.sh in its job (as sbatch starts it), with fake srun and scontrol."""
    bin_dir = record_dir / 'bin'
    for name, text in (('srun', FAKE_JOB_SRUN), ('scontrol', FAKE_SLURM_COMMAND)):
        fake_command(bin_dir, name, text)
    env = {k: v for k, v in checkout_env(OMP_NUM_THREADS='1').items() if k not in LAUNCH_VARS}
    env.update(PATH=f'{bin_dir}{os.pathsep}{os.environ["PATH"]}', RECORD_DIR=str(record_dir), PYTHON=sys.executable)
    env.update(SLURM_JOB_ID='4242', SLURM_RESTART_COUNT=str(restarts), PORT=str(free_port()))
    command = ['bash', 'tools/slurm_batch.sh', '--in-job', str(REPO / 'tools'), str(config), str(work_dir)]
    out = (record_dir / f'job{restarts}.log').open('w')
    return subprocess.Popen([*command, '--cfg-options', 'randomness.seed=0'], cwd=REPO, stdout=out, stderr=out, env=env)


@pytest.mark.slow
def test_slurm_batch_requeues_on_the_warning_and_the_job_resumes(toy_coco: Path, tmp_path: Path) -> None:
    config = small_config(tmp_path / 'small.py', toy_coco, max_epochs=3)
    work_dir = tmp_path / 'work'
    job = batch_job(config, work_dir, tmp_path)
    while not [r for r in logged_records(work_dir) if r.get('iter', 0) >= 2 and 'loss' in r]:
        assert job.poll() is None, (tmp_path / 'job0.log').read_text()[-3000:]
        time.sleep(0.1)
    os.kill(job.pid, signal.SIGUSR1)  # what Slurm sends the batch shell WARN_SECONDS before the time limit
    assert job.wait(timeout=600) == 75, (tmp_path / 'job0.log').read_text()[-3000:]

    assert recorded_calls(tmp_path, 'scontrol')[-1] == ['requeue', '4242']
    srun = (tmp_path / 'srun').read_text().splitlines()
    assert srun[:3] == ['--kill-on-bad-exit=1', sys.executable, '-u']
    assert srun[3:] == [
        str(REPO / 'tools/train.py'),
        str(config),
        f'--work-dir={work_dir}',
        '--launcher=slurm',
        '--cfg-options',
        'randomness.seed=0',
    ]
    log = (tmp_path / 'job0.log').read_text()
    assert 'stopped by SIGUSR1' in log and 'requeueing job 4242' in log

    # the requeued job: the same command line, and --resume
    restarted = batch_job(config, work_dir, tmp_path, restarts=1)
    assert restarted.wait(timeout=600) == 0, (tmp_path / 'job1.log').read_text()[-3000:]
    assert (tmp_path / 'srun').read_text().splitlines()[3:] == [*srun[3:], '--resume']
    log = (tmp_path / 'job1.log').read_text()
    assert 'restart 1 of job 4242' in log and 'continuing a run stopped by SIGUSR1' in log
    assert (work_dir / 'epoch_3.pth').is_file()
    assert [call for call in recorded_calls(tmp_path, 'scontrol') if call[0] == 'requeue'] == [['requeue', '4242']]


@pytest.mark.slow
def test_slurm_batch_does_not_requeue_a_cancelled_job(toy_coco: Path, tmp_path: Path) -> None:
    """scancel (SIGTERM) stops training with a checkpoint; the job is not requeued."""
    config = small_config(tmp_path / 'small.py', toy_coco, max_epochs=3)
    job = batch_job(config, tmp_path / 'work', tmp_path)
    while not [r for r in logged_records(tmp_path / 'work') if 'loss' in r]:
        assert job.poll() is None, (tmp_path / 'job0.log').read_text()[-3000:]
        time.sleep(0.1)
    os.kill(job.pid, signal.SIGTERM)
    assert job.wait(timeout=600) == 75, (tmp_path / 'job0.log').read_text()[-3000:]
    assert ['requeue', '4242'] not in recorded_calls(tmp_path, 'scontrol')
    assert list((tmp_path / 'work').glob('iter_*.pth'))


# script -> (its arguments before GPUS, the tool it starts)
DIST_SCRIPTS = {
    'dist_train.sh': (['configs/a.py'], ['tools/train.py', 'configs/a.py']),
    'dist_test.sh': (['configs/a.py', 'a.pth'], ['tools/test.py', 'configs/a.py', 'a.pth']),
}


@pytest.mark.parametrize('script', list(DIST_SCRIPTS))
def test_dist_script_hands_torchrun_the_nodes(script: str, tmp_path: Path) -> None:
    python = fake_command(tmp_path / 'bin', 'python', FAKE_PYTHON)
    before, (tool, *args) = DIST_SCRIPTS[script]
    command = ['bash', f'tools/{script}', *before, '4', '--work-dir', 'w']
    run_script(command, tmp_path, PYTHON=str(python), NNODES='2', NODE_RANK='1', MASTER_ADDR='10.1.2.3', PORT='23456')

    assert recorded_argv(tmp_path) == [
        '-m',
        'torch.distributed.run',
        '--nnodes=2',
        '--node_rank=1',
        '--master_addr=10.1.2.3',
        '--master_port=23456',
        '--nproc_per_node=4',
        '--signals-to-handle=SIGTERM,SIGINT,SIGHUP,SIGQUIT,SIGUSR1',  # USR1 reaches the workers too
        str(REPO / tool),
        *args,
        '--launcher',
        'pytorch',
        '--work-dir',
        'w',
    ]


@pytest.mark.slow
def test_dist_test_runs_two_cpu_processes(small_detector: tuple[Path, Path], tmp_path: Path) -> None:
    config, checkpoint = small_detector
    python = fake_command(tmp_path / 'bin', 'python', FAKE_PYTHON)
    port = str(free_port())
    work_dir, predictions = tmp_path / 'test', tmp_path / 'predictions.pkl'
    command = ['bash', 'tools/dist_test.sh', str(config), str(checkpoint), '2', '--work-dir', str(work_dir)]
    env = dict(PYTHON=str(python), REAL_PYTHON=sys.executable, OMP_NUM_THREADS='1')
    env.update(NNODES='1', NODE_RANK='0', MASTER_ADDR='127.0.0.1', PORT=port)
    output = run_script([*command, '--out', str(predictions)], tmp_path, timeout=600, **env)

    argv = recorded_argv(tmp_path)
    nodes = ['--nnodes=1', '--node_rank=0', '--master_addr=127.0.0.1', f'--master_port={port}']
    assert argv[2:7] == [*nodes, '--nproc_per_node=2']
    assert 'distributed run: backend gloo, rank 0 of 2' in output
    assert 'coco/bbox_mAP' in output
    assert 'RankZeroLoggerHook' in output  # one rank writes the metrics' JSON (tests/test_dist_test_log.py)
    # both ranks' predictions were gathered: each of the 4 validation images once
    samples = pickle.loads(predictions.read_bytes())
    assert len({s['img_path'] for s in samples}) == len(samples) == 4

    # a 1-process run of the same model predicts the same boxes and reports the same metrics
    single = tmp_path / 'single.pkl'
    command = [sys.executable, 'tools/test.py', str(config), str(checkpoint), '--work-dir', str(tmp_path / 'one')]
    run_script([*command, '--out', str(single)], tmp_path, timeout=600, OMP_NUM_THREADS='1')
    metrics, reference = logged_test_metrics(work_dir), logged_test_metrics(tmp_path / 'one')
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/bbox_mAP_75'):
        assert metrics[key] == pytest.approx(reference[key], abs=1e-3), key
    by_image = {s['img_path']: s['pred_instances'] for s in pickle.loads(single.read_bytes())}
    assert by_image.keys() == {s['img_path'] for s in samples}
    for sample in samples:
        ours, theirs = sample['pred_instances'], by_image[sample['img_path']]
        assert len(ours['scores']) == 20  # score_thr 0: the 20 best boxes
        for key in ('bboxes', 'scores', 'labels'):
            np.testing.assert_allclose(np.asarray(ours[key]), np.asarray(theirs[key]), rtol=1e-4, atol=1e-3)


def test_show_dir_draws_every_test_image(small_detector: tuple[Path, Path], toy_coco: Path, tmp_path: Path) -> None:
    config, checkpoint = small_detector
    show_dir = REPO / 'shown_by_test_tools'  # relative: from the current directory (the checkout), as --help says
    command = [sys.executable, 'tools/test.py', str(config), str(checkpoint), '--work-dir', str(tmp_path / 'test')]
    try:
        run_script([*command, '--show-dir', show_dir.name], tmp_path, timeout=300, OMP_NUM_THREADS='1')
        drawn = {p.name: cv2.imread(str(p)) for p in sorted(show_dir.iterdir())}
    finally:
        shutil.rmtree(show_dir, ignore_errors=True)
    originals = sorted((toy_coco / 'val2017').iterdir())
    # mmdet's DetVisualizationHook names each picture after its image
    assert list(drawn) == [p.name for p in originals]
    for (name, image), original in zip(drawn.items(), originals):
        source = cv2.imread(str(original))
        h, w = source.shape[:2]
        assert image is not None and image.shape == (h, 2 * w, 3)  # ground truth | prediction
        for half in (image[:, :w], image[:, w:]):  # boxes and labels were drawn on both
            changed = np.abs(half.astype(int) - source.astype(int)).max(axis=2) > 50
            assert changed.mean() > 0.05, name


def test_leaf_datasets_reach_inside_wrappers_built_or_as_configs() -> None:
    """One unwrapper for dataset configs (keys) and built datasets (attributes), wrappers nested in any order."""
    from types import SimpleNamespace

    from mmpvt.datasets import leaf_datasets

    first, second = dict(type='CocoDataset', ann_file='a.json'), dict(type='CocoDataset', ann_file='b.json')
    config = dict(type='ConcatDataset', datasets=[dict(type='RepeatDataset', times=2, dataset=first), second])
    assert leaf_datasets(config) == [first, second]
    assert leaf_datasets(first) == [first]
    built = SimpleNamespace(datasets=[SimpleNamespace(dataset=SimpleNamespace(datasets=['a', 'b'])), 'c'])
    assert leaf_datasets(built) == ['a', 'b', 'c']


def test_missing_data_inside_a_dataset_wrapper_is_found(tmp_path: Path) -> None:
    from mmengine.config import Config

    from mmpvt.launch import ConfigError
    from mmpvt.launch.data_checks import check_data

    root = tmp_path / 'missing_coco'
    leaf = dict(type='CocoDataset', data_root=str(root), ann_file='annotations/instances_train2017.json')
    cfg = Config(dict(train_dataloader=dict(dataset=dict(type='RepeatDataset', times=3, dataset=leaf))))
    with pytest.raises(ConfigError, match=rf'train_dataloader: {root} not found \(dataset CocoDataset'):
        check_data(cfg, ['train_dataloader'])
