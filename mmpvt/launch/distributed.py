"""Distributed runs: the process group before the Runner, CPU (gloo) runs, rank-0 verdicts, teardown.

With CUDA, mmengine's own initialisation is kept (``init_dist`` with the config's
backend, usually nccl, and a DDP wrapper on ``LOCAL_RANK``'s GPU); :func:`set_local_rank`
makes ``LOCAL_RANK`` right for every launcher first (mmengine's MPI path never sets it,
and its DDP wrapper reads it). Without CUDA, mmengine 0.10's ``init_dist`` calls
``torch.cuda.set_device`` and its DDP wrapper passes ``device_ids=[LOCAL_RANK]``, which
CPU modules reject; :func:`prepare_cpu_distributed` therefore initialises a gloo process
group itself (``init_dist(backend='gloo')`` would still call ``torch.cuda.set_device``) and
asks for :class:`~mmpvt.engine.model_wrappers.CpuDistributedDataParallel`.

:func:`init_distributed` starts the group before the Runner is built (the Runner then
skips its own initialisation), so that work touching shared storage (choosing the
checkpoint to resume from, checking every image) can run once, on rank 0, with
:func:`on_rank_zero` handing its result or its error to every rank.
"""

from __future__ import annotations

import datetime
import gc
import os
import pickle
import subprocess
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.dist import broadcast_object_list, get_rank, init_dist, is_distributed
from mmengine.logging import print_log

T = TypeVar('T')

#: launcher -> the variable holding a process's rank on its own node (``LOCAL_RANK``'s source).
LOCAL_RANK_VARS = {'mpi': 'OMPI_COMM_WORLD_LOCAL_RANK', 'slurm': 'SLURM_LOCALID'}


def set_local_rank(launcher: str, default: int = 0) -> None:
    """Set ``LOCAL_RANK``, which mmengine's DDP wrapper reads for ``device_ids``, for ``launcher``.

    torchrun sets it itself (else ``default``, the legacy ``--local_rank``). Under MPI and
    Slurm it comes from ``OMPI_COMM_WORLD_LOCAL_RANK`` / ``SLURM_LOCALID``: mmengine's
    ``_init_dist_mpi`` puts each process on ``cuda:OMPI_COMM_WORLD_LOCAL_RANK`` but never
    sets ``LOCAL_RANK``, so without this every rank's DDP would be given ``device_ids=[0]``.

    Raises:
        ValueError: ``--launcher mpi`` in a process that Open MPI's mpirun did not start.
    """
    source = LOCAL_RANK_VARS.get(launcher)
    if source and source in os.environ:
        os.environ['LOCAL_RANK'] = os.environ[source]
    elif launcher == 'mpi':
        raise ValueError(
            f"--launcher mpi: {source} is not set; start the job with Open MPI's mpirun "
            '(or use --launcher pytorch with torchrun, --launcher slurm with srun)'
        )
    else:
        os.environ.setdefault('LOCAL_RANK', str(default))


def _slurm_env() -> None:
    """Set torch's env:// variables from SLURM's, as mmengine's ``_init_dist_slurm`` does."""
    node_list = os.environ['SLURM_NODELIST']
    os.environ.setdefault('MASTER_ADDR', subprocess.getoutput(f'scontrol show hostname {node_list} | head -n1'))
    os.environ.setdefault('MASTER_PORT', '29500')
    os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
    os.environ['RANK'] = os.environ['SLURM_PROCID']
    set_local_rank('slurm')


def _mpi_env() -> None:
    """Set torch's env:// variables from Open MPI's."""
    os.environ.setdefault('MASTER_ADDR', '127.0.0.1')
    os.environ.setdefault('MASTER_PORT', '29500')
    os.environ['WORLD_SIZE'] = os.environ['OMPI_COMM_WORLD_SIZE']
    os.environ['RANK'] = os.environ['OMPI_COMM_WORLD_RANK']
    set_local_rank('mpi')


def prepare_cpu_distributed(cfg: Config, launcher: str) -> bool:
    """Set up a distributed run on CPU processes (gloo) when CUDA is unavailable.

    Does nothing (and returns False) for ``launcher='none'`` or when CUDA is available,
    so GPU runs keep mmengine's own initialisation. Otherwise it initialises the gloo
    process group from the launcher's environment (unless it is up already) and sets
    ``cfg.model_wrapper_cfg`` to :class:`~mmpvt.engine.model_wrappers.CpuDistributedDataParallel` (no device ids,
    SyncBN reverted to BN: torch's runs only on accelerators).

    Args:
        cfg: the run's config, modified in place.
        launcher: ``'pytorch'`` (torchrun), ``'slurm'`` or ``'mpi'``.

    Returns:
        Whether the CPU path was taken.
    """
    if launcher == 'none' or torch.cuda.is_available():
        return False
    if not torch_dist.is_initialized():
        if launcher == 'slurm':
            _slurm_env()
        elif launcher == 'mpi':
            _mpi_env()
        elif launcher != 'pytorch':
            raise ValueError(f'unknown launcher {launcher!r}; expected none, pytorch, slurm or mpi')
        timeout = cfg.get('env_cfg', {}).get('dist_cfg', {}).get('timeout')
        kwargs = dict(timeout=datetime.timedelta(seconds=timeout)) if timeout else {}
        torch_dist.init_process_group(backend='gloo', **kwargs)
        print_log(  # once, where the group starts (this runs again when the Runner is built)
            f'no CUDA: distributed run: backend gloo, rank {torch_dist.get_rank()} of {torch_dist.get_world_size()} '
            'on CPU processes',
            logger='current',
        )
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    wrapper.setdefault('type', 'MMDistributedDataParallel')
    if wrapper['type'] in ('MMDistributedDataParallel', 'CpuDistributedDataParallel'):
        wrapper['type'] = 'CpuDistributedDataParallel'
        wrapper.setdefault('broadcast_buffers', False)
        wrapper.setdefault('find_unused_parameters', cfg.get('find_unused_parameters', False))
    cfg.model_wrapper_cfg = wrapper
    return True


def init_distributed(cfg: Config) -> None:
    """Start the process group of ``cfg.launcher`` now, before the Runner (which then skips its own).

    Without CUDA: :func:`prepare_cpu_distributed` (gloo). With CUDA: mmengine's
    ``init_dist`` with the config's ``env_cfg.dist_cfg``, exactly what the Runner would
    call. Nothing for ``launcher='none'`` or when a group is already up.
    """
    launcher = cfg.get('launcher', 'none')
    if launcher == 'none' or is_distributed() or prepare_cpu_distributed(cfg, launcher):
        return
    init_dist(launcher, **dict((cfg.get('env_cfg') or {}).get('dist_cfg') or {}))
    if torch_dist.is_initialized():  # what the group really is, not what the config asked for
        print_log(
            f'distributed run: backend {torch_dist.get_backend()}, rank {torch_dist.get_rank()} of '
            f'{torch_dist.get_world_size()} on cuda:{torch.cuda.current_device()}',
            logger='current',
        )


def on_rank_zero(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn`` on rank 0 only and give every rank its result, or raise its error on every rank.

    For work on shared storage whose verdict every rank must share (which checkpoint to
    resume from, whether every image exists): one rank reads, the others wait for its
    answer instead of repeating the reads. Outside a distributed run, just ``fn(...)``.
    """
    if not is_distributed():
        return fn(*args, **kwargs)
    outcome: list[Any] = [None, None]
    if get_rank() == 0:
        try:
            outcome[0] = fn(*args, **kwargs)
        except Exception as err:  # handed to every rank below, then raised by each
            outcome[1] = err
            try:
                pickle.dumps(err)
            except Exception:
                outcome[1] = RuntimeError(f'rank 0: {type(err).__name__}: {err}')
    broadcast_object_list(outcome, src=0)
    if outcome[1] is not None:
        raise outcome[1]
    return outcome[0]


def close_distributed(succeeded: bool = True) -> None:
    """Tear the process group down, and first everything of the run that holds on to it.

    The Runner (unreachable by now, but kept in reference cycles) holds the DDP wrapper,
    which holds the group's gloo backend; ``gc.collect()`` releases them here, while the
    interpreter is whole. After a run that ended normally every rank then waits at a
    barrier, so none closes its connections while another still finishes its last
    collective. After an error there is no barrier (the other ranks may never reach it);
    a gloo group (CPU run) is still destroyed, a GPU (nccl) one is left to torchrun,
    which stops the other ranks.

    Why: a gloo worker thread releases a finished collective's work object on its own
    time (the barrier's holds the preceding all_gather's tensors), and releasing a tensor
    that has a Python object takes the GIL. The backend and its threads live as long as
    anything holds the group: the Runner's DDP wrapper did, past ``destroy_process_group``,
    until interpreter exit. A release that came during Python's finalisation got its
    thread ended by Python (``pthread_exit`` in ``take_gil``); that forced unwinding hit a
    ``noexcept`` destructor and called ``std::terminate`` ("terminate called without an
    active exception", SIGABRT), so torchrun reported a finished run as failed (seen in gdb;
    about 1 run in 5 of a 2-process toy).
    """
    if not (torch_dist.is_available() and torch_dist.is_initialized()):
        return
    gc.collect()
    if succeeded:
        torch_dist.barrier()
    elif torch_dist.get_backend() != 'gloo':
        return
    torch_dist.destroy_process_group()


@contextmanager
def distributed_run(cfg: Config) -> Iterator[None]:
    """Start the process group (:func:`init_distributed`) and always end it (:func:`close_distributed`).

    When the body fails in a distributed run, the local variables of the failed frames
    (the Runner among them) are dropped from the traceback first, so that the Runner and
    its DDP wrapper are released before the group goes, not during interpreter exit.
    """
    init_distributed(cfg)
    try:
        yield
    except BaseException as err:
        if is_distributed():
            traceback.clear_frames(err.__traceback__)
        close_distributed(succeeded=False)
        raise
    close_distributed(succeeded=True)
