"""mmpvt's PVT against mmdet's, side by side in one process: speed, memory, FLOP rate.

Usage:
    python tools/analysis/benchmark.py                      # every task, PVT-S
    python tools/analysis/benchmark.py --tasks infer --infer-size 224 224 --arch tiny
    python tools/analysis/benchmark.py --json work_dirs/bench.json
    python tools/analysis/benchmark.py --device cuda --amp fp16
    python tools/analysis/benchmark.py --device cuda --arch b2 --tasks infer,train,memory  # PVTv2-b2
    python tools/analysis/benchmark.py --tasks bf16 --infer-size 800 1333   # CPU: fp32 against bf16
    python tools/analysis/benchmark.py --tasks bf16 --arch b2 --infer-size 512 512

mmpvt runs twice, as built (plain module calls) and after ``mmpvt.optimize_for_cpu_inference``
(the CPU fast paths the tools apply): ``mmpvt`` and ``mmpvt_fast`` in the results, with the
ratios mmdet / fast (``speedup``) and plain / fast (``fast_gain``).

Both backbones get identical weights (mmdet's initialisation, converted with
``mmpvt.convert.convert_state_dict``) and must give the same outputs before anything is
timed: max |ours - mmdet's| <= 1e-5 × max |mmdet's output|. (An absolute 1e-5 is below
fp32 rounding here: PVT-S outputs reach ~15, where one fp32 ulp is ~1e-6 and sixteen
blocks of reductions in a different order differ by ~2e-5, as mmpvt's unoptimised first
version did too.) Tasks:

- ``infer``: backbone forward in inference mode, one image per size in ``--infer-size``.
- ``train``: a training step (forward, ``sum of output means`` as the loss, backward) at
  ``--train-size`` with ``--train-batch`` images; both in train mode, stochastic depth 0.1.
- ``memory``: peak memory of that training step at ``--memory-size``, mmdet's backbone as
  is (it has no checkpointing) against ours with ``with_cp=True`` (and without, for
  reference). Each figure comes from a fresh subprocess that builds the model and input,
  resets the kernel's resident-set high-water mark (``/proc/self/clear_refs``), runs one
  step and reports ``VmHWM`` minus the resident set before the step: the memory the step
  needed on top of weights and input. On CUDA: ``torch.cuda.max_memory_allocated``.
- ``detector``: whole RetinaNet predict (backbone, FPN, head, post-processing) of mmdet's
  ``retinanet_pvt-s_fpn_1x_coco`` against the same config with ``type='PVT'``.
- ``gemm``: the machine's fp32 GEMM rate (square ``torch.mm``), measured next to the
  backbone timings, and the share of it the backbone achieves (multiply-adds from
  :func:`mmpvt.analysis.count_macs`, attention products included, × 2 FLOP).
- ``bf16`` (CPU; not in the default set): fp32 against bf16, side by side. The machine's fp32
  and bf16 GEMM rates; at each ``--infer-size`` mmdet's backbone in fp32 and under bf16
  autocast, ours optimised in fp32 (``mmpvt``), in bf16 (``mmpvt_bf16``:
  ``optimize_for_cpu_inference(model, torch.bfloat16)``) and plain under autocast
  (``mmpvt_autocast``); each bf16 output's error against its own fp32 output (max |diff| /
  max |fp32 output|); the share of the bf16 GEMM rate our bf16 path reaches. Then the
  training step (``--train-size``) of both backbones in fp32 and under bf16 autocast (what
  ``--amp`` runs on a CPU). For PVT v1, RetinaNet's predict at ``--detector-size`` in fp32, with
  the bf16 backbone alone and with neck and head under bf16 autocast too (what ``test.py --amp``
  runs), and each one's head outputs against fp32's. The CPU's AMX flags and the precision
  ``--amp`` would choose are in the machine record.

Timings are medians of ``--repeats`` runs after ``--warmup`` runs, mmdet and ours
alternating, so a noisy shared machine slows all alike.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from typing import Any

import torch
from torch import nn

TASKS = ('infer', 'train', 'memory', 'detector', 'gemm')
EXTRA_TASKS = ('bf16',)
MMDET_DETECTOR = 'pvt/retinanet_pvt-{short}_fpn_1x_coco.py'  # in mmdet's packaged configs (mmdet::)
MMDET_DEPTHS = {'tiny': [2, 2, 2, 2], 'small': [3, 4, 6, 3], 'medium': [3, 4, 18, 3], 'large': [3, 8, 27, 3]}
MMDET_V2_DEPTHS = {'b2': [3, 4, 6, 3]}  # against mmdet's PyramidVisionTransformerV2 (its defaults are b2's)
#: Default of --tolerance: fp32 rounding, or that of the autocast dtype.
TOLERANCE = {None: 1e-5, 'fp16': 1e-2, 'bf16': 5e-2}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--arch', default='small', choices=[*MMDET_DEPTHS, *MMDET_V2_DEPTHS], help='PVT v1 variant, or PVTv2-b2'
    )
    parser.add_argument(
        '--tasks', default=','.join(TASKS), help=f'comma-separated subset of {",".join(TASKS + EXTRA_TASKS)}'
    )
    parser.add_argument('--infer-size', nargs=2, type=int, action='append', metavar=('H', 'W'))
    parser.add_argument('--train-size', nargs=2, type=int, default=[512, 512], metavar=('H', 'W'))
    parser.add_argument('--train-batch', type=int, default=2)
    parser.add_argument('--memory-size', nargs=2, type=int, default=[800, 1333], metavar=('H', 'W'))
    parser.add_argument('--memory-batch', type=int, default=2)
    parser.add_argument('--detector-size', nargs=2, type=int, default=[800, 1333], metavar=('H', 'W'))
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--device', default='cpu', choices=['cpu', 'cuda'])
    parser.add_argument('--amp', default=None, choices=['fp16', 'bf16'], help='autocast dtype (GPU users)')
    parser.add_argument(
        '--tolerance',
        type=float,
        default=None,
        help='outputs must agree to this share of their scale (default 1e-5; under --amp 1e-2 for fp16, 5e-2 for bf16)',
    )
    parser.add_argument('--tf32', action='store_true', help='CUDA: allow TF32 (default off: fp32 numerics)')
    parser.add_argument('--threads', type=int, default=None, help='torch threads (default: all cores)')
    parser.add_argument('--json', default=None, help='write the results to this file')
    parser.add_argument('--memory-worker', nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.infer_size = args.infer_size or [[800, 1333], [224, 224]]
    args.tasks = [t for t in args.tasks.split(',') if t]
    args.tolerance = args.tolerance or TOLERANCE[args.amp]
    if args.arch in MMDET_V2_DEPTHS and 'detector' in args.tasks:
        parser.error('the detector task compares PVT v1 RetinaNets only')
    unknown = set(args.tasks) - set(TASKS + EXTRA_TASKS)
    if unknown:
        parser.error(f'unknown tasks {sorted(unknown)}; choose from {TASKS + EXTRA_TASKS}')
    if 'bf16' in args.tasks and (args.device != 'cpu' or args.amp):
        parser.error('the bf16 task compares fp32 and bf16 on the CPU: no --device cuda, no --amp')
    return args


# ----------------------------------------------------------------------------- models
def build_backbones(arch: str, *, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """mmdet's and mmpvt's PVT v1 ``arch``, ours loaded with mmdet's (initialised) weights."""
    from mmdet.models.backbones.pvt import PyramidVisionTransformer as MMDetPVT
    from mmdet.models.backbones.pvt import PyramidVisionTransformerV2 as MMDetPVTv2

    from mmpvt.convert import convert_state_dict
    from mmpvt.models.pvt import PyramidVisionTransformer

    torch.manual_seed(seed)
    if arch in MMDET_V2_DEPTHS:
        theirs = MMDetPVTv2(num_layers=MMDET_V2_DEPTHS[arch])
    else:
        theirs = MMDetPVT(num_layers=MMDET_DEPTHS[arch])
    theirs.init_weights()
    ours = PyramidVisionTransformer.from_arch(arch, embed_norm_eps=1e-6)  # mmdet's LayerNorm eps everywhere
    ours.load_state_dict(convert_state_dict(theirs.state_dict(), ours), strict=True)
    return theirs, ours


def build_detectors(arch: str, *, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """mmdet's RetinaNet-PVT config and the same config with mmpvt's backbone, same weights."""
    import mmdet
    from mmdet.registry import MODELS
    from mmengine.config import Config
    from mmengine.logging import MMLogger
    from mmengine.registry import init_default_scope

    import mmpvt  # noqa: F401  (registers PVT in mmdet's registry)
    from mmpvt.convert import convert_state_dict

    init_default_scope('mmdet')
    MMLogger.get_current_instance().setLevel('WARNING')  # no per-parameter init report
    configs = os.path.join(os.path.dirname(mmdet.__file__), '.mim', 'configs')
    cfg = Config.fromfile(os.path.join(configs, MMDET_DETECTOR.format(short=arch[0])))
    cfg.model.backbone.init_cfg = None  # no download; weights are copied below
    torch.manual_seed(seed)
    theirs = MODELS.build(cfg.model)
    theirs.init_weights()
    cfg.model.backbone = dict(type='PVT', arch=arch, embed_norm_eps=1e-6)  # mmdet's LayerNorm eps everywhere
    ours = MODELS.build(cfg.model)
    # the converter finds the backbone under 'backbone.' and keeps neck and head keys as they are
    ours.load_state_dict(convert_state_dict(theirs.state_dict(), ours.backbone), strict=True)
    return theirs, ours


def detector_inputs(hw: tuple[int, int], device: str) -> tuple[torch.Tensor, list[Any]]:
    """One normalised image and its data sample, as mmdet's data preprocessor would give."""
    from mmdet.structures import DetDataSample

    h, w = hw
    sample = DetDataSample(
        metainfo=dict(
            img_shape=(h, w), ori_shape=(h, w), pad_shape=(h, w), batch_input_shape=(h, w), scale_factor=(1.0, 1.0)
        )
    )
    return torch.randn(1, 3, h, w, device=device), [sample]


def with_fast(ours: nn.Module) -> dict[str, nn.Module]:
    """mmpvt as built and an optimised copy (:func:`mmpvt.optimize_for_cpu_inference`), same weights."""
    from mmpvt import optimize_for_cpu_inference

    return {'mmpvt': ours, 'mmpvt_fast': optimize_for_cpu_inference(copy.deepcopy(ours))}


def ratios(times: dict[str, float]) -> dict[str, float]:
    """mmdet / optimised mmpvt (``speedup``) and plain / optimised mmpvt (``fast_gain``)."""
    return dict(speedup=times['mmdet'] / times['mmpvt_fast'], fast_gain=times['mmpvt'] / times['mmpvt_fast'])


# ----------------------------------------------------------------------------- helpers
def sync(device: str) -> None:
    if device == 'cuda':
        torch.cuda.synchronize()


def autocast(args: argparse.Namespace) -> Any:
    if args.amp is None:
        return nullcontext()
    return torch.autocast(args.device, dtype=torch.float16 if args.amp == 'fp16' else torch.bfloat16)


def time_pair(fns: dict[str, Callable[[], Any]], args: argparse.Namespace) -> dict[str, float]:
    """Median seconds of each function; they alternate (in both orders) so load hits both."""
    names = list(fns)
    for _ in range(args.warmup):
        for name in names:
            fns[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(args.repeats):
        for name in names if rep % 2 == 0 else names[::-1]:
            sync(args.device)
            start = time.perf_counter()
            fns[name]()
            sync(args.device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def agree(theirs: Any, ours: Any, tol: float = 1e-5) -> tuple[bool, float, float]:
    """(max |difference| <= tol × max |output|, max |difference|, that ratio)."""
    pairs = list(zip(_flatten(theirs), _flatten(ours)))
    diff = max((a.float() - b.float()).abs().max().item() for a, b in pairs)
    scale = max(a.float().abs().max().item() for a, _ in pairs)
    rel = diff / max(scale, 1e-12)
    return rel <= tol, diff, rel


def _flatten(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for item in out for t in _flatten(item)]


def gemm_rate(device: str, n: int = 2048, repeats: int = 5, dtype: torch.dtype = torch.float32) -> float:
    """GFLOP/s of an n×n×n ``torch.mm`` in ``dtype`` (median of ``repeats``)."""
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    torch.mm(a, b, out=out)
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        torch.mm(a, b, out=out)
        sync(device)
        times.append(time.perf_counter() - start)
    return 2 * n**3 / statistics.median(times) / 1e9


def gemm_size(device: str, dtype: torch.dtype, n: int = 2048, repeats: int = 5, budget_s: float = 5.0) -> int:
    """The largest of n, n/2, ... (at least 256) whose ``repeats + 1`` products in ``dtype`` fit in ``budget_s``.

    Judged from one 256³ product: where oneDNN emulates bf16 (a CPU with AVX2 only, the Zen 1
    EPYC) a 2048³ bf16 product took 96 s, a 512³ one 0.19 s; elsewhere n stays.
    """
    a = torch.randn(256, 256, device=device, dtype=dtype)
    torch.mm(a, a)
    once = float('inf')
    for _ in range(3):  # the fastest of three: one pre-emption must not shrink n
        sync(device)
        start = time.perf_counter()
        torch.mm(a, a)
        sync(device)
        once = min(once, time.perf_counter() - start)
    while n > 256 and once * (n / 256) ** 3 * (repeats + 1) > budget_s:
        n //= 2
    return n


def train_step(model: nn.Module, x: torch.Tensor, args: argparse.Namespace) -> None:
    with autocast(args):
        outs = model(x)
        loss = sum(o.float().mean() for o in outs)
    loss.backward()
    model.zero_grad(set_to_none=True)


# ----------------------------------------------------------------------------- tasks
def run_infer(theirs: nn.Module, ours: nn.Module, args: argparse.Namespace, results: dict[str, Any]) -> None:
    from mmpvt.analysis import count_macs

    models = {'mmdet': theirs.eval(), **{name: m.eval() for name, m in with_fast(ours).items()}}
    for h, w in args.infer_size:
        x = torch.randn(1, 3, h, w, device=args.device)
        with torch.inference_mode(), autocast(args):
            reference = theirs(x)
            for name in ('mmpvt', 'mmpvt_fast'):
                ok, diff, rel = agree(reference, models[name](x), args.tolerance)
                if not ok:
                    raise AssertionError(
                        f'{name} outputs differ at {h}×{w}: max |diff| {diff:.2e} ({rel:.1e} of scale)'
                    )
            times = time_pair({name: lambda m=m, x=x: m(x) for name, m in models.items()}, args)
        macs = count_macs(ours, lambda m, x=x: m(x)).total
        results[f'infer_{h}x{w}'] = dict(
            **times, **ratios(times), max_abs_diff=diff, max_rel_diff=rel, gmacs=macs / 1e9
        )
        print(f'  infer {h}×{w}: outputs agree (max |diff| {diff:.1e}, {rel:.1e} of scale)', flush=True)


def run_train(theirs: nn.Module, ours: nn.Module, args: argparse.Namespace, results: dict[str, Any]) -> None:
    ours.with_cp = False
    models = {'mmdet': theirs.train(), **{name: m.train() for name, m in with_fast(ours).items()}}
    x = torch.randn(args.train_batch, 3, *args.train_size, device=args.device)
    times = time_pair({name: lambda m=m: train_step(m, x, args) for name, m in models.items()}, args)
    h, w = args.train_size
    results[f'train_{args.train_batch}x{h}x{w}'] = dict(**times, **ratios(times))


def run_detector(args: argparse.Namespace, results: dict[str, Any]) -> None:
    theirs, ours = build_detectors(args.arch)
    models = {'mmdet': theirs, **with_fast(ours)}
    for model in models.values():
        model.to(args.device).eval()
    x, samples = detector_inputs(tuple(args.detector_size), args.device)
    with torch.inference_mode(), autocast(args):
        reference = theirs(x, mode='tensor')
        for name in ('mmpvt', 'mmpvt_fast'):
            ok, diff, rel = agree(reference, models[name](x, mode='tensor'), args.tolerance)
            if not ok:
                raise AssertionError(f'{name} detector outputs differ: max |diff| {diff:.2e} ({rel:.1e} of scale)')
        times = time_pair({name: lambda m=m: m.predict(x, samples) for name, m in models.items()}, args)
    h, w = args.detector_size
    results[f'retinanet_{h}x{w}'] = dict(**times, **ratios(times), max_abs_diff=diff)
    print(f'  detector {h}×{w}: head outputs agree (max |diff| {diff:.1e})', flush=True)


def memory_worker(which: str, args: argparse.Namespace) -> float:
    """Peak memory (MiB) one training step needs beyond model and input; run in a fresh process."""
    theirs, ours = build_backbones(args.arch)
    model = theirs if which == 'mmdet' else ours
    if which == 'mmpvt_cp':
        ours.with_cp = True
    model.to(args.device).train()
    x = torch.randn(args.memory_batch, 3, *args.memory_size, device=args.device)
    del theirs, ours
    if args.device == 'cuda':
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        train_step(model, x, args)
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # reset VmHWM to the current resident set
    base = _status_kib('VmRSS')
    train_step(model, x, args)
    return (_status_kib('VmHWM') - base) / 1024


def _status_kib(field: str) -> int:
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'{field} not in /proc/self/status')


def run_memory(args: argparse.Namespace, results: dict[str, Any]) -> None:
    peaks = {}
    for which in ('mmdet', 'mmpvt_cp', 'mmpvt'):
        cmd = [sys.executable, __file__, '--arch', args.arch, '--device', args.device, '--memory-worker', which, 'x']
        cmd += ['--memory-size', *map(str, args.memory_size), '--memory-batch', str(args.memory_batch)]
        cmd += ['--amp', args.amp] if args.amp else []
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        peaks[which] = float(out.strip().splitlines()[-1])
    h, w = args.memory_size
    results[f'memory_{args.memory_batch}x{h}x{w}'] = dict(
        mmdet_mib=peaks['mmdet'],
        mmpvt_cp_mib=peaks['mmpvt_cp'],
        mmpvt_mib=peaks['mmpvt'],
        ratio_cp=peaks['mmpvt_cp'] / peaks['mmdet'],
        ratio=peaks['mmpvt'] / peaks['mmdet'],
    )


def bf16_autocast(model: nn.Module) -> Callable[[torch.Tensor], Any]:
    """``model`` under ``torch.autocast('cpu', torch.bfloat16)``."""

    def run(x: torch.Tensor) -> Any:
        with torch.autocast('cpu', torch.bfloat16):
            return model(x)

    return run


def run_bf16(theirs: nn.Module, ours: nn.Module, args: argparse.Namespace, results: dict[str, Any]) -> None:
    """fp32 against bf16 on the CPU, mmdet's and ours side by side (see the ``bf16`` task)."""
    from mmpvt import optimize_for_cpu_inference
    from mmpvt.analysis import count_macs
    from mmpvt.models.cpu_features import choose_cpu_dtype

    choice = choose_cpu_dtype(torch.bfloat16)
    if choice.slower:
        print(f'  bf16 {choice}: the bf16 runs take much longer than the fp32 ones here', flush=True)
    sizes = {torch.float32: 2048, torch.bfloat16: gemm_size('cpu', torch.bfloat16)}
    rates = {dtype: gemm_rate('cpu', n=n, dtype=dtype) for dtype, n in sizes.items()}
    theirs.eval(), ours.eval()
    fast = optimize_for_cpu_inference(copy.deepcopy(ours))
    bf16 = optimize_for_cpu_inference(copy.deepcopy(ours), choice)
    runs = {
        'mmdet': theirs,
        'mmdet_bf16': bf16_autocast(theirs),
        'mmpvt': fast,
        'mmpvt_bf16': bf16,
        'mmpvt_autocast': bf16_autocast(ours),
    }
    for h, w in args.infer_size:
        x = torch.randn(1, 3, h, w)
        with torch.inference_mode():
            outs = {name: run(x) for name, run in runs.items()}
            ok, diff, rel = agree(outs['mmdet'], outs['mmpvt'], args.tolerance)
            if not ok:
                raise AssertionError(f'fp32 outputs differ at {h}×{w}: max |diff| {diff:.2e} ({rel:.1e} of scale)')
            errors = {
                f'{name}_error': agree(outs['mmdet' if name.startswith('mmdet') else 'mmpvt'], outs[name])[2]
                for name in ('mmdet_bf16', 'mmpvt_bf16', 'mmpvt_autocast')
            }
            times = time_pair({name: lambda run=run, x=x: run(x) for name, run in runs.items()}, args)
        flop = 2 * count_macs(ours, lambda m, x=x: m(x)).total
        results[f'bf16_infer_{h}x{w}'] = dict(
            **times,
            **errors,
            gflop=flop / 1e9,
            bf16_gain=times['mmpvt'] / times['mmpvt_bf16'],
            speedup_bf16=times['mmdet_bf16'] / times['mmpvt_bf16'],
        )
        print(f'  bf16 {h}×{w}: errors against fp32 {errors}', flush=True)
    rates = {dtype: max(rate, gemm_rate('cpu', n=sizes[dtype], dtype=dtype)) for dtype, rate in rates.items()}
    results['bf16_gemm'] = dict(
        fp32_gflops=rates[torch.float32], bf16_gflops=rates[torch.bfloat16], bf16_n=sizes[torch.bfloat16]
    )
    for name, r in results.items():
        if name.startswith('bf16_infer'):
            r['bf16_share'] = r['gflop'] / r['mmpvt_bf16'] / rates[torch.bfloat16]
            r['fp32_share'] = r['gflop'] / r['mmpvt'] / rates[torch.float32]
    ours.with_cp = False
    x = torch.randn(args.train_batch, 3, *args.train_size)
    bf16_args = copy.copy(args)
    bf16_args.amp = 'bf16'
    steps = {}
    for name, model in (('mmdet', theirs), ('mmpvt', optimize_for_cpu_inference(copy.deepcopy(ours)))):
        model.train()
        steps[name] = lambda m=model: train_step(m, x, args)
        steps[f'{name}_bf16'] = lambda m=model: train_step(m, x, bf16_args)
    times = time_pair(steps, args)
    h, w = args.train_size
    results[f'bf16_train_{args.train_batch}x{h}x{w}'] = dict(
        **times, bf16_gain=times['mmpvt'] / times['mmpvt_bf16'], speedup_bf16=times['mmdet_bf16'] / times['mmpvt_bf16']
    )


def run_bf16_detector(args: argparse.Namespace, results: dict[str, Any]) -> None:
    """RetinaNet-PVT predict on the CPU: fp32, the bf16 backbone alone, and with neck and head under bf16 autocast."""
    from mmpvt import optimize_for_cpu_inference
    from mmpvt.engine.hooks.cpu_fast_paths import autocast_heads

    _theirs, ours = build_detectors(args.arch)
    ours.eval()
    whole = optimize_for_cpu_inference(copy.deepcopy(ours), torch.bfloat16)
    autocast_heads(whole, torch.bfloat16)
    models = {
        'fp32': optimize_for_cpu_inference(copy.deepcopy(ours)),
        'bf16_backbone': optimize_for_cpu_inference(copy.deepcopy(ours), torch.bfloat16),
        'bf16_whole': whole,
    }
    x, samples = detector_inputs(tuple(args.detector_size), 'cpu')
    with torch.inference_mode():
        reference = models['fp32'](x, mode='tensor')
        errors = {f'{name}_error': agree(reference, models[name](x, mode='tensor'))[2] for name in list(models)[1:]}
        times = time_pair({name: lambda m=m: m.predict(x, samples) for name, m in models.items()}, args)
    h, w = args.detector_size
    results[f'bf16_retinanet_{h}x{w}'] = dict(
        **times,
        **errors,
        backbone_gain=times['fp32'] / times['bf16_backbone'],
        whole_gain=times['fp32'] / times['bf16_whole'],
    )


# ----------------------------------------------------------------------------- report
def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    if os.path.exists('/proc/cpuinfo'):
        with open('/proc/cpuinfo') as f:
            names = [line.split(':', 1)[1].strip() for line in f if line.startswith('model name')]
        cpu = names[0] if names else cpu
    from mmpvt.models.cpu_features import choose_cpu_dtype, has_amx

    return dict(
        cpu=cpu,
        amx=has_amx(),
        amp_precision=str(choose_cpu_dtype('auto')),
        cores=os.cpu_count(),
        threads=torch.get_num_threads(),
        torch=torch.__version__,
        load_average=os.getloadavg(),
        device=args_device_name(),
    )


def args_device_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'


def print_table(results: dict[str, Any]) -> None:
    if not any(name.startswith(('infer', 'train', 'retinanet', 'memory')) for name in results):
        print_bf16_table(results)
        print(f'machine: {results["machine"]}')
        return
    print(
        '\n| measurement | mmdet | mmpvt plain | mmpvt optimised | mmdet / optimised | plain / optimised |'
        '\n|---|---|---|---|---|---|'
    )
    for name, r in results.items():
        if name.startswith(('infer', 'train', 'retinanet')):
            print(
                f'| {name} | {r["mmdet"]:.3f} s | {r["mmpvt"]:.3f} s | {r["mmpvt_fast"]:.3f} s '
                f'| {r["speedup"]:.2f}× | {r["fast_gain"]:.2f}× |'
            )
        elif name.startswith('memory'):
            print(
                f'| {name} peak (train step) | {r["mmdet_mib"]:.0f} MiB | {r["mmpvt_cp_mib"]:.0f} MiB with_cp '
                f"({r['mmpvt_mib']:.0f} MiB without) | {r['ratio_cp']:.2f}× of mmdet's |"
            )
    if 'gemm' in results:
        g = results['gemm']
        print(
            f'\nfp32 GEMM rate: {g["gemm_gflops"]:.0f} GFLOP/s. PVT backbone at {g["size"]}: '
            f'{g["gflop"]:.0f} GFLOP ({g["gflop"] / 2:.1f} GMAC incl. attention), '
            f'mmdet {g["mmdet_gflops"]:.0f} GFLOP/s ({g["mmdet_share"]:.0%}), '
            f'optimised mmpvt {g["mmpvt_gflops"]:.0f} GFLOP/s ({g["mmpvt_share"]:.0%} of the GEMM rate)'
        )
    print_bf16_table(results)
    print(f'machine: {results["machine"]}')


def print_bf16_table(results: dict[str, Any]) -> None:
    if 'bf16_gemm' not in results:
        return
    g = results['bf16_gemm']
    bf16_n = g.get('bf16_n', 2048)
    print(
        f'\nGEMM 2048³: fp32 {g["fp32_gflops"]:.0f} GFLOP/s, bf16 {g["bf16_gflops"]:.1f} GFLOP/s'
        f'{f" (at {bf16_n}³: 2048³ would take minutes)" if bf16_n != 2048 else ""} '
        f'({g["bf16_gflops"] / g["fp32_gflops"]:.2g}×)'
        '\n| measurement | mmdet fp32 | mmdet bf16 autocast | mmpvt fp32 | mmpvt bf16 | mmpvt autocast '
        '| fp32 / bf16 (ours) | share of the bf16 GEMM rate | error of mmpvt bf16 (autocast; mmdet) |'
        '\n|---|---|---|---|---|---|---|---|---|'
    )
    rows, after = [], []  # the table's rows; the detector's line below the table
    for name, r in results.items():
        if name.startswith('bf16_infer'):
            rows.append(
                f'| {name[5:]} ({r["gflop"]:.0f} GFLOP) | {r["mmdet"]:.3f} s | {r["mmdet_bf16"]:.3f} s '
                f'| {r["mmpvt"]:.3f} s | {r["mmpvt_bf16"]:.3f} s | {r["mmpvt_autocast"]:.3f} s | {r["bf16_gain"]:.2f}× '
                f"| {r['bf16_share']:.0%} (fp32 path: {r['fp32_share']:.0%} of fp32's) "
                f'| {r["mmpvt_bf16_error"]:.1e} ({r["mmpvt_autocast_error"]:.1e}; {r["mmdet_bf16_error"]:.1e}) |'
            )
        elif name.startswith('bf16_train'):
            rows.append(
                f'| {name[5:]} | {r["mmdet"]:.3f} s | {r["mmdet_bf16"]:.3f} s | {r["mmpvt"]:.3f} s '
                f'| {r["mmpvt_bf16"]:.3f} s (autocast) | | {r["bf16_gain"]:.2f}× | | |'
            )
        elif name.startswith('bf16_retinanet'):
            after.append(
                f'\n{name[5:]} predict, mmpvt: fp32 {r["fp32"]:.3f} s; bf16 backbone {r["bf16_backbone"]:.3f} s '
                f"({r['backbone_gain']:.2f}×, head outputs {r['bf16_backbone_error']:.1e} of scale from fp32's); "
                f'bf16 backbone, neck and head under autocast {r["bf16_whole"]:.3f} s ({r["whole_gain"]:.2f}×, '
                f'{r["bf16_whole_error"]:.1e})'
            )
    print('\n'.join(rows + after))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == 'cuda':  # TF32 would move outputs by ~1e-3 and time other arithmetic than the CPU's
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = args.tf32
    if args.memory_worker:
        print(memory_worker(args.memory_worker[0], args))
        return {}
    results: dict[str, Any] = {'machine': machine()}
    needs_backbones = {'infer', 'train', 'gemm'} & set(args.tasks)
    if needs_backbones:
        theirs, ours = build_backbones(args.arch)
        theirs.to(args.device)
        ours.to(args.device)
        if 'gemm' in args.tasks:
            results['gemm_before'] = gemm_rate(args.device)
        if 'infer' in args.tasks or 'gemm' in args.tasks:
            run_infer(theirs, ours, args, results)
        if 'gemm' in args.tasks:
            rate = max(results.pop('gemm_before'), gemm_rate(args.device))
            h, w = args.infer_size[0]
            r = results[f'infer_{h}x{w}']
            flop = 2 * r['gmacs']
            results['gemm'] = dict(
                gemm_gflops=rate,
                size=f'{h}×{w}',
                gflop=flop,
                mmdet_gflops=flop / r['mmdet'],
                mmpvt_gflops=flop / r['mmpvt_fast'],
                mmdet_share=flop / r['mmdet'] / rate,
                mmpvt_share=flop / r['mmpvt_fast'] / rate,
            )
        if 'train' in args.tasks:
            run_train(theirs, ours, args, results)
        del theirs, ours
    if 'memory' in args.tasks:
        run_memory(args, results)
    if 'detector' in args.tasks:
        run_detector(args, results)
    if 'bf16' in args.tasks:
        theirs, ours = build_backbones(args.arch)
        run_bf16(theirs, ours, args, results)
        del theirs, ours
        if args.arch in MMDET_DEPTHS:  # mmdet's RetinaNet-PVT configs are v1's
            run_bf16_detector(args, results)
    results['machine']['load_average_end'] = os.getloadavg()
    print_table(results)
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == '__main__':
    main()
