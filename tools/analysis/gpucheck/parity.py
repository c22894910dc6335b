"""Parity on the GPU, run as a subprocess: ``python -m gpucheck.parity timm|mmdet --device cuda --json F``.

* ``timm`` (needs torch and timm only, so it runs first): mmpvt's PVTv2-b2 against timm's ``pvt_v2_b2`` with
  the same weights (timm's own initialisation, converted by :func:`mmpvt.convert.convert_state_dict`), fp32
  with TF32 off, at a size that divides by 32 and at one that does not; then mmpvt alone: fp16 and bf16
  autocast against fp32, SRA's SDPA path against its explicit path, CUDA against the CPU forward and
  backward, activation checkpointing against none.
* ``mmdet``: PVT-S and PVTv2-b2 against mmdet's ``PyramidVisionTransformer(V2)`` with the same weights, fp32
  with TF32 off and under fp16 and bf16 autocast.

Every bound is relative: max |difference| <= bound × max |reference|.
"""

from __future__ import annotations

import argparse
import copy
import inspect
import json
import math
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from .report import Check

#: The stated bounds, relative to the reference's largest magnitude.
TOL = {
    'fp32': 1e-5,
    'fp16': 1e-2,
    'bf16': 5e-2,
    'sdpa_fp16': 5e-3,
    'sdpa_fp32': 1e-5,
    'cuda_cpu': 1e-5,
    'grad_cuda_cpu': 1e-4,
    'with_cp': 1e-6,
}
MMDET_ARCHS = {'small': 'PVT-S', 'b2': 'PVTv2-b2'}
DTYPES = {'fp16': torch.float16, 'bf16': torch.bfloat16}


@contextmanager
def no_tf32() -> Iterator[None]:
    """TF32 off for matmuls and cuDNN convolutions inside the block (fp32 numerics)."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def relative_diff(refs: Sequence[torch.Tensor], outs: Sequence[torch.Tensor]) -> float:
    """max |ref - out| over every tensor, divided by max |ref|; inf when anything is not finite."""
    if len(refs) != len(outs):
        return math.inf
    diffs = [(r.float().cpu() - o.float().cpu()).abs().max().item() for r, o in zip(refs, outs, strict=True)]
    scale = max(r.float().abs().max().item() for r in refs)
    diff = max(diffs)
    return diff / max(scale, 1e-12) if math.isfinite(diff) and math.isfinite(scale) else math.inf


class Recorder:
    """Collects the checks of one stage, each judged against its bound."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.checks: list[Check] = []
        self.mark = time.monotonic()

    def record(self, name: str, rel: float, tol: float, context: str = '') -> None:
        now = time.monotonic()
        verdict = 'pass' if rel <= tol else 'fail'
        figure = f'{rel:.1e} of scale (bound {tol:g}){context}'
        self.checks.append(Check(self.stage, name, verdict, figure, round(now - self.mark, 1), dict(rel=rel, tol=tol)))
        self.mark = now

    def crashed(self, name: str, err: BaseException) -> None:
        self.checks.append(Check(self.stage, name, 'fail', f'{type(err).__name__}: {err}'[:400]))

    def run(self, name: str, fn: Callable[[], None]) -> None:
        """``fn`` records its own checks; an exception becomes one failed check named ``name``."""
        try:
            fn()
        except Exception as err:  # reported with the others; the next group still runs
            self.crashed(name, err)


def ours_from(state_dict: dict[str, torch.Tensor], arch: str, **kwargs: Any) -> nn.Module:
    from mmpvt.convert import convert_state_dict
    from mmpvt.models.pvt import PyramidVisionTransformer

    ours = PyramidVisionTransformer.from_arch(arch, **kwargs)
    ours.load_state_dict(convert_state_dict(state_dict, ours), strict=True)
    return ours


def timm_stage_outputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The four stage outputs (B, C, H, W) of a timm PvtV2, through its public intermediates where it has them."""
    if hasattr(model, 'forward_intermediates'):
        return list(model.forward_intermediates(x, intermediates_only=True))
    out = model.patch_embed(x)  # older timm: (tokens, size); newer: an NHWC map
    x, size = out if isinstance(out, tuple) else (out, None)
    outs = []
    for stage in model.stages:
        x, size = stage(x, feat_size=size) if size is not None else (stage(x), None)
        outs.append(x)
    return outs


def timm_checks(device: str, size: tuple[int, int], odd_size: tuple[int, int]) -> list[Check]:
    import timm

    rec = Recorder('parity timm')
    torch.manual_seed(0)
    theirs = timm.create_model('pvt_v2_b2', pretrained=False, num_classes=0).eval()
    ours = ours_from(theirs.state_dict(), 'b2', drop_path_rate=0.0).eval()  # deterministic training mode
    theirs.to(device)
    ours.to(device)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(1, 3, *size, generator=gen).to(device)
    x_odd = torch.randn(1, 3, *odd_size, generator=gen).to(device)
    where = f' (timm {timm.__version__}, {device})'

    def versus_timm() -> None:
        with torch.no_grad(), no_tf32():
            rec.record(f'PVTv2-b2 vs timm pvt_v2_b2, fp32 TF32 off, {size[0]}×{size[1]}',
                       relative_diff(timm_stage_outputs(theirs, x), ours(x)), TOL['fp32'], where)  # fmt: skip
            rec.record(f'PVTv2-b2 vs timm pvt_v2_b2, fp32 TF32 off, {odd_size[0]}×{odd_size[1]}',
                       relative_diff(timm_stage_outputs(theirs, x_odd), ours(x_odd)), TOL['fp32'], where)  # fmt: skip

    rec.run('PVTv2-b2 vs timm', versus_timm)
    theirs.cpu()
    rec.run('mmpvt alone', lambda: self_checks(rec, ours, x, device))
    return rec.checks


def self_checks(rec: Recorder, ours: nn.Module, x: torch.Tensor, device: str) -> None:
    """mmpvt against itself: autocast, SDPA, CUDA vs CPU, activation checkpointing."""
    from mmpvt.layers.attention import SpatialReductionAttention

    sras = [m for m in ours.modules() if isinstance(m, SpatialReductionAttention)]

    def explicit(flag: bool) -> None:
        for m in sras:
            m.fused_attn = not flag

    with torch.no_grad(), no_tf32():
        ref = ours(x)
        for name, dtype in DTYPES.items():
            with torch.autocast(device, dtype=dtype):
                out = ours(x)
            rec.record(f'PVTv2-b2 {name} autocast vs fp32', relative_diff(ref, out), TOL[name])
        explicit(True)
        rec.record('SRA SDPA vs explicit, fp32', relative_diff(ours(x), ref), TOL['sdpa_fp32'])
        with torch.autocast(device, dtype=torch.float16):
            plain = ours(x)
            explicit(False)
            fused = ours(x)
        rec.record('SRA SDPA vs explicit, fp16 autocast', relative_diff(plain, fused), TOL['sdpa_fp16'])
        if device == 'cuda':
            cpu = copy.deepcopy(ours).cpu()
            rec.record('PVTv2-b2 CUDA vs CPU, fp32 forward', relative_diff([o.cpu() for o in ref], cpu(x.cpu())),
                       TOL['cuda_cpu'])  # fmt: skip
    crop = x[..., :256, :256]
    with no_tf32():
        grads = backward_grads(ours, crop)
        if device == 'cuda':
            cpu_grads = backward_grads(copy.deepcopy(ours).cpu(), crop.cpu())
            rec.record('PVTv2-b2 CUDA vs CPU, fp32 backward (parameter gradients)',
                       relative_diff(cpu_grads, grads), TOL['grad_cuda_cpu'])  # fmt: skip
        ours.with_cp = True
        try:
            cp_grads = backward_grads(ours, crop)
        finally:
            ours.with_cp = False
        rec.record('with_cp vs without, fp32 gradients', relative_diff(grads, cp_grads), TOL['with_cp'])


def backward_grads(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Parameter gradients of sum(mean of each output) in train mode (stochastic depth off by construction)."""
    model.train()
    model.zero_grad(set_to_none=True)
    sum(o.mean() for o in model(x)).backward()
    grads = [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]
    model.eval()
    return grads


def build_mmdet_pair(arch: str, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """(mmdet's backbone after its own init_weights, mmpvt's with the same weights and mmdet's eps)."""
    from mmdet.models.backbones.pvt import PyramidVisionTransformer as MMDetV1
    from mmdet.models.backbones.pvt import PyramidVisionTransformerV2 as MMDetV2

    from mmpvt.models.pvt import PyramidVisionTransformer

    torch.manual_seed(seed)
    theirs = (MMDetV2 if arch.startswith('b') else MMDetV1)(num_layers=[3, 4, 6, 3])
    theirs.init_weights()
    params = inspect.signature(PyramidVisionTransformer).parameters
    eps = {'embed_norm_eps': 1e-6} if 'embed_norm_eps' in params else {}
    return theirs.eval(), ours_from(theirs.state_dict(), arch, **eps).eval()


def mmdet_checks(device: str, size: tuple[int, int], archs: Sequence[str] = tuple(MMDET_ARCHS)) -> list[Check]:
    rec = Recorder('parity mmdet')
    for arch in archs:
        rec.run(MMDET_ARCHS[arch], lambda arch=arch: mmdet_arch_checks(rec, arch, device, size))
    return rec.checks


def mmdet_arch_checks(rec: Recorder, arch: str, device: str, size: tuple[int, int]) -> None:
    name = MMDET_ARCHS[arch]
    theirs, ours = build_mmdet_pair(arch)
    theirs.to(device)
    ours.to(device)
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1)).to(device)
    with torch.no_grad(), no_tf32():
        ref, out = theirs(x), ours(x)
        rec.record(f'{name} vs mmdet, fp32 TF32 off', relative_diff(ref, out), TOL['fp32'])
        for dtype_name, dtype in DTYPES.items():
            with torch.autocast(device, dtype=dtype):
                ref_amp, out_amp = theirs(x), ours(x)
            context = f'; vs fp32: mmdet {relative_diff(ref, ref_amp):.1e}, mmpvt {relative_diff(ref, out_amp):.1e}'
            rec.record(f'{name} vs mmdet, {dtype_name} autocast', relative_diff(ref_amp, out_amp), TOL[dtype_name],
                       context)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description='GPU parity checks (one group); writes its checks as JSON')
    parser.add_argument('group', choices=['timm', 'mmdet'])
    parser.add_argument('--device', default='cuda', choices=['cuda', 'cpu'])
    parser.add_argument('--size', nargs=2, type=int, default=[512, 672])
    parser.add_argument('--odd-size', nargs=2, type=int, default=[333, 517])
    parser.add_argument('--threads', type=int, default=4, help='CPU threads (the build uses the other cores)')
    parser.add_argument('--json', required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.group == 'timm':
        checks = timm_checks(args.device, tuple(args.size), tuple(args.odd_size))
    else:
        checks = mmdet_checks(args.device, tuple(args.size))
    with open(args.json, 'w') as f:
        json.dump([asdict(c) for c in checks], f, indent=2)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
