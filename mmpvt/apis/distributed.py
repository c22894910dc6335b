"""Distributed runs on machines without CUDA, and loss logging averaged over ranks.

With CUDA, mmengine's own path is kept (``init_dist`` with the config's backend,
usually nccl, and a DDP wrapper on ``LOCAL_RANK``'s GPU). Without CUDA, mmengine
0.10's ``init_dist`` calls ``torch.cuda.set_device`` and its DDP wrapper passes
``device_ids=[LOCAL_RANK]``, which CPU modules reject; :func:`prepare_cpu_distributed`
therefore initialises a gloo process group itself, before the Runner is built (the
Runner then skips its own initialisation), and asks for a DDP wrapper without device ids.
"""

from __future__ import annotations

import datetime
import os
import subprocess
from typing import Any

import torch
import torch.distributed as torch_dist
from mmengine.config import Config
from mmengine.dist import all_reduce_dict, is_distributed
from mmengine.hooks import Hook
from mmengine.logging import print_log


def _slurm_env() -> None:
    """Set torch's env:// variables from SLURM's, as mmengine's ``_init_dist_slurm`` does."""
    node_list = os.environ['SLURM_NODELIST']
    os.environ.setdefault('MASTER_ADDR', subprocess.getoutput(f'scontrol show hostname {node_list} | head -n1'))
    os.environ.setdefault('MASTER_PORT', '29500')
    os.environ['WORLD_SIZE'] = os.environ['SLURM_NTASKS']
    os.environ['RANK'] = os.environ['SLURM_PROCID']
    os.environ['LOCAL_RANK'] = os.environ.get('SLURM_LOCALID', '0')


def _mpi_env() -> None:
    """Set torch's env:// variables from Open MPI's."""
    os.environ.setdefault('MASTER_ADDR', '127.0.0.1')
    os.environ.setdefault('MASTER_PORT', '29500')
    os.environ['WORLD_SIZE'] = os.environ['OMPI_COMM_WORLD_SIZE']
    os.environ['RANK'] = os.environ['OMPI_COMM_WORLD_RANK']
    os.environ['LOCAL_RANK'] = os.environ['OMPI_COMM_WORLD_LOCAL_RANK']


def _sync_bn_to_bn(node: Any) -> int:
    """Replace ``type='SyncBN'`` by ``'BN'`` in a nested config; return how many were replaced."""
    count = 0
    if isinstance(node, dict):
        if node.get('type') == 'SyncBN':
            node['type'] = 'BN'
            count += 1
        for value in node.values():
            count += _sync_bn_to_bn(value)
    elif isinstance(node, list | tuple):
        count += sum(_sync_bn_to_bn(value) for value in node)
    return count


def prepare_cpu_distributed(cfg: Config, launcher: str) -> bool:
    """Set up a distributed run on CPU processes (gloo) when CUDA is unavailable.

    Does nothing (and returns False) for ``launcher='none'`` or when CUDA is available,
    so GPU runs keep mmengine's own initialisation. Otherwise it initialises the gloo
    process group from the launcher's environment, sets ``cfg.model_wrapper_cfg`` to a
    DDP wrapper without device ids, and turns SyncBN (CUDA-only in torch) into BN.

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
    wrapper = dict(cfg.get('model_wrapper_cfg') or {})
    wrapper.setdefault('type', 'MMDistributedDataParallel')
    if wrapper['type'] == 'MMDistributedDataParallel':
        wrapper.setdefault('broadcast_buffers', False)
        wrapper.setdefault('find_unused_parameters', cfg.get('find_unused_parameters', False))
        wrapper['device_ids'] = None
    cfg.model_wrapper_cfg = wrapper
    converted = _sync_bn_to_bn(cfg.model)
    if converted:
        print_log(f'CPU distributed run: {converted} SyncBN layer config(s) turned into BN', logger='current')
    print_log(
        f'no CUDA: distributed run on CPU processes with gloo (rank {torch_dist.get_rank()} '
        f'of {torch_dist.get_world_size()})',
        logger='current',
    )
    return True


def close_distributed() -> None:
    """Wait for every rank, then destroy the process group (after a run that ended normally).

    Left to interpreter exit, the teardown of a gloo group raced its own threads and
    aborted a rank (``terminate called without an active exception``, SIGABRT) after a
    finished 2-process run, turning a success into torchrun's ``ChildFailedError``.
    torch asks for an explicit ``destroy_process_group`` with nccl too.
    """
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.barrier()
        torch_dist.destroy_process_group()


class RankMeanLossHook(Hook):
    """Log the training losses averaged over all ranks instead of rank 0's own.

    mmengine 0.10 logs each rank's local ``log_vars``; this hook all-reduces them
    (mean) right after each training step, before ``RuntimeInfoHook`` records them,
    so the log of an N-process run shows the loss of the whole batch.
    """

    priority = 'HIGHEST'

    def after_train_iter(
        self,
        runner: Any,
        batch_idx: int,
        data_batch: Any = None,
        outputs: dict[str, Any] | None = None,
    ) -> None:
        """Replace every tensor of ``outputs`` by its mean over ranks."""
        if not outputs or not is_distributed():
            return
        tensors = {k: v.detach().clone().float() for k, v in outputs.items() if isinstance(v, torch.Tensor)}
        all_reduce_dict(tensors, op='mean')
        outputs.update(tensors)
