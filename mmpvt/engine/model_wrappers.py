"""Distributed training on CPU processes: ``model_wrapper_cfg = dict(type='CpuDistributedDataParallel')``.

mmengine 0.10's DDP wrapper passes ``device_ids=[LOCAL_RANK]``, which CPU modules reject, and
torch's ``SyncBatchNorm`` runs only on accelerators. ``tools/train.py`` picks this wrapper for a
distributed run without CUDA (:func:`mmpvt.launch.distributed.prepare_cpu_distributed`).
"""

from __future__ import annotations

from typing import Any

from mmengine.logging import print_log
from mmengine.model import MMDistributedDataParallel, revert_sync_batchnorm
from mmengine.registry import MODEL_WRAPPERS
from torch import nn


@MODEL_WRAPPERS.register_module()
class CpuDistributedDataParallel(MMDistributedDataParallel):
    """mmengine's DDP wrapper for CPU processes: no device ids, SyncBN layers reverted to BN.

    torch's ``SyncBatchNorm`` (and mmcv's) run only on accelerators; mmengine's
    ``revert_sync_batchnorm`` turns every one of them, whether the config asked for
    ``SyncBN``, ``MMSyncBN`` or ``sync_bn='torch'``, into a plain batch norm with the same
    parameters and state-dict keys. Each process then normalises over its own batch.
    """

    def __init__(self, module: nn.Module, **kwargs: Any) -> None:
        devices = sorted({str(p.device) for p in module.parameters() if p.device.type != 'cpu'})
        if devices:
            raise ValueError(
                f'CpuDistributedDataParallel is for CPU processes, but the model has parameters on '
                f'{", ".join(devices)}; on GPUs use MMDistributedDataParallel (model_wrapper_cfg type)'
            )
        synced = sum(1 for m in module.modules() if 'SyncBatchNorm' in type(m).__name__)
        if synced:
            module = revert_sync_batchnorm(module)
            print_log(f'CPU distributed run: {synced} SyncBN layer(s) turned into BN', logger='current')
        kwargs['device_ids'] = None
        super().__init__(module=module, **kwargs)
