"""Publish a training checkpoint: keep the weights and the metadata, drop the optimizer and the training state,
and put the first 8 hex digits of the file's SHA-256 into its name (OpenMMLab's convention).

mmdet's and mmseg's ``publish_model.py`` do the same but cannot read an mmengine checkpoint on torch >= 2.6
(safe loading refuses its metadata) unless mmpvt is imported; this one reads through mmpvt's safe reader.

Example:
    python tools/model_converters/publish_model.py work_dirs/retinanet_pvt_s_fpn_1x_coco/epoch_12.pth \
        retinanet_pvt_s_fpn_1x_coco.pth      # writes retinanet_pvt_s_fpn_1x_coco-1a2b3c4d.pth
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os.path as osp
from collections.abc import Mapping
from typing import Any

import torch

from mmpvt.checkpoint import load_file
from mmpvt.engine.fileio import write_atomically
from mmpvt.launch import ConfigError
from mmpvt.launch.entry import run_tool, user_error

#: What a published checkpoint keeps of a training checkpoint; the rest (optimizer, param_schedulers,
#: message_hub, ema_state_dict, ...) is training state.
KEPT = ('state_dict', 'meta')


def publishable(checkpoint: Any, source: str) -> dict[str, Any]:
    """The weights and metadata of a checkpoint (a bare state dict becomes ``{'state_dict': ...}``)."""
    if not isinstance(checkpoint, Mapping):
        raise ConfigError(f'{source} holds a {type(checkpoint).__name__}; expected a checkpoint (a dict)')
    if 'state_dict' not in checkpoint:
        if not any(isinstance(v, torch.Tensor) for v in checkpoint.values()):
            raise ConfigError(f'{source} holds no state_dict and no tensors; expected a training checkpoint')
        return {'state_dict': dict(checkpoint)}
    meta = dict(checkpoint.get('meta') or {})
    meta.pop('hook_msgs', None)  # the best-checkpoint bookkeeping of the run
    return {'state_dict': checkpoint['state_dict'], 'meta': meta}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('in_file', help='a training checkpoint (.pth)')
    parser.add_argument('out_file', help='the published file NAME.pth; written as NAME-HASH8.pth')
    args = parser.parse_args(argv)
    if not args.out_file.endswith('.pth'):
        raise ConfigError(f'out_file must end in .pth, got {args.out_file}')
    with user_error('', FileNotFoundError, ValueError):
        checkpoint = load_file(args.in_file)
    published = publishable(checkpoint, args.in_file)
    buffer = io.BytesIO()
    torch.save(published, buffer)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    final = f'{args.out_file[: -len(".pth")]}-{digest[:8]}.pth'
    if osp.exists(final):
        raise ConfigError(f'{final} exists; refusing to overwrite it')
    write_atomically(data, final)
    dropped = sorted(set(checkpoint) - set(published)) if isinstance(checkpoint, Mapping) else []
    print(f'wrote {final} ({len(data) / 2**20:.1f} MB, sha256 {digest}); dropped: {", ".join(dropped) or "nothing"}')
    return 0


if __name__ == '__main__':
    run_tool(main)
