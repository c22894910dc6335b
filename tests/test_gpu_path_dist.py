"""The GPU users' distributed path, checked on the CPU.

* MPI and Slurm: ``LOCAL_RANK`` (what mmengine's DDP wrapper passes as ``device_ids``) is the
  launcher's local rank before the Runner is built, and equals the GPU mmengine's own
  ``init_dist`` selects (``torch.cuda.set_device`` and ``init_process_group`` recorded, not run).
* The CPU (gloo) path maps the launcher's variables to RANK / WORLD_SIZE / LOCAL_RANK and
  reverts SyncBN to BN with mmengine's ``revert_sync_batchnorm``.
* ``--resume``: one rank (0) reads, every rank gets its choice or its error; the checks read a
  checkpoint's index, not its tensors (bytes read measured in /proc/self/io).
* ``check_image_files`` stats the images on rank 0 only.
* ``train`` destroys the process group in a ``finally``, also when a check fails.
"""

from __future__ import annotations

import datetime
import importlib.util
import os
import socket
import weakref
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
from helpers import REPO, TOY_CONFIGS, small_config
from mmdet.registry import MODELS
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.dist import utils as dist_utils
from torch import nn

from mmpvt.checkpoint import load_file
from mmpvt.engine.model_wrappers import CpuDistributedDataParallel
from mmpvt.launch import ConfigError, distributed, resume
from mmpvt.launch import data_checks as checks
from mmpvt.launch import main as launch
from mmpvt.launch.checkpoints import checkpoint_shapes
from mmpvt.launch.data_checks import check_image_files
from mmpvt.launch.distributed import on_rank_zero, prepare_cpu_distributed
from mmpvt.launch.resume import choose_resume_checkpoint

RETINANET_TOY = str(TOY_CONFIGS / 'retinanet_pvt_t_fpn_toy_coco.py')

#: Every variable a launcher sets that these tests set or read; cleared before each test.
LAUNCH_ENV = (
    'RANK',
    'WORLD_SIZE',
    'LOCAL_RANK',
    'MASTER_ADDR',
    'MASTER_PORT',
    'OMPI_COMM_WORLD_RANK',
    'OMPI_COMM_WORLD_SIZE',
    'OMPI_COMM_WORLD_LOCAL_RANK',
    'SLURM_PROCID',
    'SLURM_NTASKS',
    'SLURM_LOCALID',
    'SLURM_NODELIST',
)


@pytest.fixture(autouse=True)
def clean_launch_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in LAUNCH_ENV:
        monkeypatch.delenv(name, raising=False)


def free_port() -> str:
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        return str(sock.getsockname()[1])


def toy_args(toy_coco: Path, work_dir: Path, *extra: str) -> list[str]:
    """tools/train.py arguments for the toy RetinaNet reading ``toy_coco``."""
    roots = [f'{loader}.dataset.data_root={toy_coco}/' for loader in ('train_dataloader', 'val_dataloader')]
    return [RETINANET_TOY, '--work-dir', str(work_dir), *extra, '--cfg-options', *roots]


class FakeGpu:
    """Records what mmengine's ``init_dist`` asks of CUDA and of ``init_process_group`` (nothing is started)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.device: int | None = None
        self.group: dict[str, Any] | None = None
        monkeypatch.setattr(torch.cuda, 'is_available', lambda: True)
        monkeypatch.setattr(torch.cuda, 'set_device', self.set_device)
        monkeypatch.setattr(torch_dist, 'init_process_group', self.init_process_group)

    def set_device(self, device: int) -> None:
        self.device = device

    def init_process_group(self, backend: str, **kwargs: Any) -> None:
        self.group = dict(backend=backend, **kwargs)


@pytest.mark.parametrize(
    ('launcher', 'env'),
    [
        ('mpi', dict(OMPI_COMM_WORLD_RANK='5', OMPI_COMM_WORLD_SIZE='8', OMPI_COMM_WORLD_LOCAL_RANK='1')),
        ('slurm', dict(SLURM_PROCID='5', SLURM_NTASKS='8', SLURM_LOCALID='1', SLURM_NODELIST='gpu[01-02]')),
    ],
)
def test_gpu_launchers_give_ddp_the_local_gpu(
    launcher: str, env: dict[str, str], toy_coco: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rank 5 of 8, the second process on its node: LOCAL_RANK=1 before the Runner, and cuda:1 in mmengine."""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv('MASTER_ADDR', '10.0.0.1')
    gpu = FakeGpu(monkeypatch)
    cfg = launch.train_config(launch.train_parser().parse_args(toy_args(toy_coco, tmp_path, '--launcher', launcher)))
    assert os.environ['LOCAL_RANK'] == '1'  # set before the Runner is built, which reads it for device_ids

    # what the Runner's init_dist calls with CUDA (init_dist itself would also set the start method of every
    # later multiprocessing in this test session)
    getattr(dist_utils, f'_init_dist_{cfg.launcher}')('nccl')
    assert gpu.device == 1 == int(os.environ['LOCAL_RANK'])  # the model's GPU is DDP's device_ids[0]
    assert (os.environ['RANK'], os.environ['WORLD_SIZE']) == ('5', '8')
    assert gpu.group == dict(backend='nccl')


def test_mpi_launcher_outside_mpirun_is_refused(toy_coco: Path, tmp_path: Path) -> None:
    args = launch.train_parser().parse_args(toy_args(toy_coco, tmp_path, '--launcher', 'mpi'))
    with pytest.raises(ConfigError, match=r'--launcher mpi: OMPI_COMM_WORLD_LOCAL_RANK is not set; .*mpirun'):
        launch.train_config(args)


@pytest.fixture
def single_process_group():
    """Destroys, after the test, the one-process gloo group it started."""
    yield
    if torch_dist.is_initialized():
        torch_dist.destroy_process_group()


@pytest.mark.parametrize(
    ('launcher', 'env'),
    [
        ('mpi', dict(OMPI_COMM_WORLD_RANK='0', OMPI_COMM_WORLD_SIZE='1', OMPI_COMM_WORLD_LOCAL_RANK='0')),
        ('slurm', dict(SLURM_PROCID='0', SLURM_NTASKS='1', SLURM_LOCALID='0', SLURM_NODELIST='localhost')),
    ],
)
def test_cpu_path_maps_launcher_env_and_reverts_sync_bn(
    launcher: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch, single_process_group: None
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv('MASTER_ADDR', '127.0.0.1')
    monkeypatch.setenv('MASTER_PORT', free_port())
    cfg = Config(dict(model=dict(type='X'), model_wrapper_cfg=None))
    assert prepare_cpu_distributed(cfg, launcher)
    assert {k: os.environ[k] for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK')} == dict(
        RANK='0', WORLD_SIZE='1', LOCAL_RANK='0'
    )
    assert cfg.model_wrapper_cfg['type'] == 'CpuDistributedDataParallel'

    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.SyncBatchNorm(4), nn.Sequential(nn.SyncBatchNorm(4)))
    keys = list(model.state_dict())
    wrapped = CpuDistributedDataParallel(module=model, broadcast_buffers=False)
    assert not [m for m in wrapped.modules() if isinstance(m, nn.SyncBatchNorm)]
    assert sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in wrapped.modules()) == 2
    assert list(wrapped.module.state_dict()) == keys  # checkpoints keep their keys
    wrapped(torch.randn(2, 3, 8, 8)).sum().backward()  # trains on the CPU


def test_cpu_ddp_wrapper_refuses_a_gpu_model() -> None:
    model = nn.Linear(2, 2, device='meta')  # stands in for parameters on a GPU
    with pytest.raises(ValueError, match=r'CpuDistributedDataParallel is for CPU processes.*meta.*'):
        CpuDistributedDataParallel(module=model)


def save_training_checkpoint(path: Path, megabytes: int = 8) -> int:
    """A checkpoint shaped like mmengine's (weights, optimizer state, meta) of about ``megabytes``; its size."""
    side = int((megabytes * 2**20 / 4 / 2) ** 0.5)
    weights = {'backbone.w': torch.randn(side, side), 'head.b': torch.randn(side)}
    optimizer = {
        'state': {0: {'momentum_buffer': torch.randn(side, side)}},
        'param_groups': [{'lr': 0.1, 'params': [0]}],
    }
    torch.save({'meta': {'epoch': 3, 'iter': 12}, 'state_dict': weights, 'optimizer': optimizer}, path)
    return path.stat().st_size


def bytes_read_from_disk(fn: Any, path: Path) -> int:
    """What ``fn(path)`` read from the disk: tools/analysis/check_cost.py's measurement (page cache dropped first)."""
    spec = importlib.util.spec_from_file_location('check_cost', REPO / 'tools' / 'analysis' / 'check_cost.py')
    check_cost = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check_cost)
    return check_cost.disk_bytes(fn, str(path))


def test_checkpoint_checks_read_the_index_not_the_tensors(tmp_path: Path) -> None:
    path = tmp_path / 'epoch_3.pth'
    size = save_training_checkpoint(path, megabytes=16)
    if bytes_read_from_disk(load_file, path) < size // 2:
        pytest.skip('this file system does not report the bytes read in /proc/self/io')
    shapes_read = bytes_read_from_disk(checkpoint_shapes, path)
    assert shapes_read < size // 20, f'{shapes_read} of {size} bytes read to list the shapes'
    assert checkpoint_shapes(str(path))['backbone.w'] == load_file(path)['state_dict']['backbone.w'].shape


def _two_ranks(rank: int, init_file: str, work_dir: str, results: Any) -> None:
    """Rank ``rank`` of a two-process gloo group: rank 1 can read no checkpoint and counts its reads."""
    torch_dist.init_process_group('gloo', init_method=f'file://{init_file}', rank=rank, world_size=2)
    try:
        reads = []
        if rank == 1:

            def unreadable(path: str) -> None:
                reads.append(path)
                raise ConfigError(f'{path}: rank 1 sees a truncated file')

            resume.checkpoint_shapes = unreadable
        chosen = choose_resume_checkpoint(work_dir, 'auto')
        try:
            on_rank_zero(_fail_on_rank_zero)
            error = None
        except ConfigError as err:
            error = str(err)
        results.put((rank, chosen.path if chosen else None, len(reads), error))
    finally:
        torch_dist.destroy_process_group()


def _fail_on_rank_zero() -> None:
    raise ConfigError('rank 0 found a problem')


def test_resume_choice_is_rank_zeros(tmp_path: Path) -> None:
    """Every rank resumes from rank 0's choice and raises rank 0's error; rank 1 reads no checkpoint."""
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    save_training_checkpoint(work_dir / 'epoch_1.pth', megabytes=1)
    save_training_checkpoint(work_dir / 'epoch_2.pth', megabytes=1)
    context = mp.get_context('spawn')
    results = context.Queue()
    mp.start_processes(
        _two_ranks,
        args=(str(tmp_path / 'init'), str(work_dir), results),
        nprocs=2,
        join=True,
        start_method='spawn',
    )
    outcome = sorted(results.get(timeout=60) for _ in range(2))
    newest = str(work_dir / 'epoch_2.pth')
    assert outcome == [(0, newest, 0, 'rank 0 found a problem'), (1, newest, 0, 'rank 0 found a problem')]


class _Dataset:
    """A dataset of the shape check_image_files walks: ``get_data_info`` of every index."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths
        self.ann_file = 'instances_train2017.json'

    def __len__(self) -> int:
        return len(self.paths)

    def get_data_info(self, index: int) -> dict[str, str]:
        return dict(img_path=self.paths[index])


def test_image_files_are_checked_on_rank_zero_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On rank 1 nothing is stat'ed; rank 0's verdict (broadcast) is raised there."""
    dataset = _Dataset([str(tmp_path / f'{i}.jpg') for i in range(3)])
    loop = SimpleNamespace(dataloader=SimpleNamespace(dataset=dataset))
    runner = SimpleNamespace(train_loop=loop, cfg=Config(dict()), model=torch.nn.Identity())  # a model without heads
    with pytest.raises(ConfigError, match=r'3 file\(s\) of the training set do not exist'):
        check_image_files(runner)  # not distributed: this process checks

    checked: list[Any] = []
    monkeypatch.setattr(checks, '_check_image_files', lambda *args: checked.append(args))
    verdict = ConfigError("rank 0's verdict")

    def broadcast_from_rank_zero(outcome: list[Any], src: int = 0) -> None:
        outcome[:] = [None, verdict]

    monkeypatch.setattr(distributed, 'is_distributed', lambda: True)
    monkeypatch.setattr(distributed, 'get_rank', lambda: 1)
    monkeypatch.setattr(distributed, 'broadcast_object_list', broadcast_from_rank_zero)
    with pytest.raises(ConfigError, match="rank 0's verdict"):
        check_image_files(runner)
    assert checked == []  # rank 1 stat'ed nothing


def test_failed_run_destroys_its_process_group(
    toy_coco: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, single_process_group: None
) -> None:
    """A check that fails after the group started (here: no readable checkpoint to resume) still ends it."""
    for name, value in dict(RANK='0', WORLD_SIZE='1', LOCAL_RANK='0', MASTER_ADDR='127.0.0.1').items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv('MASTER_PORT', free_port())
    work_dir = tmp_path / 'work'
    work_dir.mkdir()
    (work_dir / 'epoch_1.pth').write_bytes(b'truncated')
    with pytest.raises(ConfigError, match='no readable checkpoint in'):
        launch.train(toy_args(toy_coco, work_dir, '--launcher', 'pytorch', '--resume'))
    assert not torch_dist.is_initialized()


@pytest.mark.parametrize('checkpoint_of', ['this model', 'another model'])
def test_run_releases_its_ddp_wrapper_before_the_group_goes(
    checkpoint_of: str, toy_coco: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, single_process_group: None
) -> None:
    """tools/test.py in a one-process gloo run: the Runner's DDP wrapper is gone when the group is destroyed.

    Left alive until interpreter exit, it (and the gloo backend it holds) aborted ranks at exit.
    With another model's checkpoint the run fails after the Runner was built, and the same holds.
    """
    for name, value in dict(RANK='0', WORLD_SIZE='1', LOCAL_RANK='0', MASTER_ADDR='127.0.0.1').items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv('MASTER_PORT', free_port())
    config = small_config(tmp_path / 'small.py', toy_coco)
    checkpoint = tmp_path / 'model.pth'
    if checkpoint_of == 'this model':
        register_all_modules()
        torch.save({'state_dict': MODELS.build(Config.fromfile(str(config)).model).state_dict()}, checkpoint)
    else:
        torch.save({'state_dict': {'fc.weight': torch.zeros(10, 512)}}, checkpoint)

    wrappers: list[weakref.ref] = []
    build = CpuDistributedDataParallel.__init__

    def recording_build(self: CpuDistributedDataParallel, *args: Any, **kwargs: Any) -> None:
        build(self, *args, **kwargs)
        wrappers.append(weakref.ref(self))

    alive_at_destroy: list[bool] = []
    destroy = torch_dist.destroy_process_group

    def checking_destroy(*args: Any, **kwargs: Any) -> None:
        alive_at_destroy.extend(ref() is not None for ref in wrappers)
        destroy(*args, **kwargs)

    monkeypatch.setattr(CpuDistributedDataParallel, '__init__', recording_build)
    monkeypatch.setattr(torch_dist, 'destroy_process_group', checking_destroy)
    argv = [str(config), str(checkpoint), '--launcher', 'pytorch', '--work-dir', str(tmp_path / 'work')]
    if checkpoint_of == 'this model':
        launch.test(argv)
    else:
        with pytest.raises(ConfigError, match='is not a checkpoint of this RetinaNet'):
            launch.test(argv)
    assert alive_at_destroy == [False]
    assert not torch_dist.is_initialized()


def test_gpu_group_starts_before_the_runner_with_the_configs_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """With CUDA, init_distributed calls mmengine's init_dist as the Runner would, with env_cfg.dist_cfg."""
    for name, value in dict(RANK='3', WORLD_SIZE='8', LOCAL_RANK='3').items():
        monkeypatch.setenv(name, value)
    gpu = FakeGpu(monkeypatch)
    monkeypatch.setattr(dist_utils.mp, 'get_start_method', lambda allow_none=False: 'fork')  # keep this session's
    monkeypatch.setattr(distributed, 'is_distributed', lambda: gpu.group is not None)
    cfg = Config(dict(launcher='pytorch', env_cfg=dict(dist_cfg=dict(backend='nccl', timeout=600))))
    distributed.init_distributed(cfg)
    assert gpu.device == 3
    assert gpu.group == dict(backend='nccl', timeout=datetime.timedelta(seconds=600))
    assert 'model_wrapper_cfg' not in cfg  # mmengine's own DDP wrapper on LOCAL_RANK's GPU
