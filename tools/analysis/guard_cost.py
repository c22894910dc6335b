"""What the non-finite guard and the stop on a signal cost on a normal training step.

* The guard (:class:`~mmpvt.engine.optim.SkipNonFiniteSteps`) adds, per step, one ``isfinite`` of the loss and
  the gradients' L2 norm with one synchronisation; with ``clip_grad=dict(type='norm')`` it computes the norm
  that clipping then uses, so it adds nothing but the ``isfinite``. Timed here on the gradients of a config's
  whole model (random values), against the AdamW step that follows anyway and against a whole training step
  (forward, backward, step) of the model on ``--images`` random images of ``--size`` pixels, guarded and
  plain steps alternating (the machine's load then weighs on both alike).
* :class:`~mmpvt.engine.hooks.preemption.StopOnSignalHook` adds, per iteration of a distributed run, one
  all-reduce of a tensor of one int64 per rank; timed here between two gloo processes on this machine
  (``--ranks 0`` skips it). In one process it adds nothing but reading a flag.

    python tools/analysis/guard_cost.py                          # RetinaNet-PVT-T, 2 images of 512x512
    python tools/analysis/guard_cost.py --config configs/fpn_pvt_t_512x512_40k_ade20k.py --size 512
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from mmengine.config import Config
from mmengine.optim import OptimWrapper
from mmengine.registry import DefaultScope, init_default_scope

from mmpvt.engine.optim import skip_non_finite_steps


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Median seconds of ``fn()`` over ``repeat`` calls, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def build_model(config: str) -> torch.nn.Module:
    cfg = Config.fromfile(config)
    init_default_scope(cfg.default_scope)
    backbone = cfg.model.backbone
    backbone.init_cfg = None  # random weights: no pretrained file needed
    registry = __import__(f'{cfg.default_scope}.registry', fromlist=['MODELS']).MODELS
    with DefaultScope.overwrite_default_scope(cfg.default_scope):
        return registry.build(cfg.model)


def fake_batch(model: torch.nn.Module, images: int, size: int) -> dict:
    """A batch of random images with one box or a label map each, in the layout the model's preprocessor reads."""
    if hasattr(model, 'decode_head'):
        from mmengine.structures import PixelData
        from mmseg.structures import SegDataSample

        samples = []
        for _ in range(images):
            sample = SegDataSample(
                metainfo=dict(img_shape=(size, size), ori_shape=(size, size), pad_shape=(size, size))
            )
            sample.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, size, size)))
            samples.append(sample)
    else:
        from mmdet.structures import DetDataSample
        from mmengine.structures import InstanceData

        samples = []
        for _ in range(images):
            sample = DetDataSample(metainfo=dict(img_shape=(size, size), ori_shape=(size, size), scale_factor=(1, 1)))
            sample.gt_instances = InstanceData(
                bboxes=torch.tensor([[10.0, 20.0, size / 2, size / 2]]), labels=torch.tensor([1])
            )
            samples.append(sample)
    return dict(
        inputs=[torch.randint(0, 255, (3, size, size), dtype=torch.uint8) for _ in range(images)], data_samples=samples
    )


def guard_cost(args: argparse.Namespace) -> None:
    model = build_model(args.config).train()
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.grad = torch.randn_like(p)
    plain = OptimWrapper(torch.optim.AdamW(params, lr=1e-4))
    guarded = OptimWrapper(torch.optim.AdamW(params, lr=1e-4))
    skip_non_finite_steps(guarded)
    loss = torch.tensor(1.0)

    def check() -> None:
        guarded._finite_loss = torch.isfinite(loss)
        guarded._finite_step()

    count = sum(p.numel() for p in params)
    check_s = timed(check, args.repeat)
    step_s = timed(plain.optimizer.step, args.repeat)
    print(f'{args.config}: {count / 1e6:.1f} M parameters in {len(params)} tensors, {torch.get_num_threads()} threads')
    print(f'  guard check (isfinite of the loss, gradient norm, one float): {check_s * 1e3:.2f} ms')
    print(f'  AdamW step that follows it: {step_s * 1e3:.2f} ms')
    if args.images:
        batch = fake_batch(model, args.images, args.size)
        # fresh optimizers, alike: AdamW's state after the random gradients above would be another workload
        # (tiny real gradients give it denormal values, many times slower to update on the CPU)
        plain = OptimWrapper(torch.optim.AdamW(params, lr=1e-4))
        guarded = OptimWrapper(torch.optim.AdamW(params, lr=1e-4))
        skip_non_finite_steps(guarded)
        for p in params:
            p.grad = None  # not the random ones: the first step would start one optimizer's state from them
        times: dict[str, list[float]] = {'plain': [], 'guarded': []}
        for _ in range(args.steps + 2):  # the first two pairs warm up (allocations, oneDNN primitives)
            for name, wrapper in (('plain', plain), ('guarded', guarded)):
                start = time.perf_counter()
                model.train_step(batch, optim_wrapper=wrapper)
                times[name].append(time.perf_counter() - start)
        plain_s, guarded_s = (statistics.median(times[name][2:]) for name in ('plain', 'guarded'))
        print(
            f'  whole training step, {args.images} images of {args.size}x{args.size}, median of {args.steps}: '
            f'{plain_s:.3f} s plain, {guarded_s:.3f} s guarded; the check is {check_s / plain_s * 100:.2f} % of a step'
        )


def _all_reduce_worker(rank: int, world: int, port: int, repeat: int) -> None:
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    dist.init_process_group('gloo', rank=rank, world_size=world)
    flags = torch.zeros(world, dtype=torch.int64)
    seconds = timed(lambda: dist.all_reduce(flags), repeat)
    if rank == 0:
        print(f'  stop flag: one all-reduce of {world} int64 between {world} gloo processes: {seconds * 1e6:.0f} µs')
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--config', default='configs/retinanet_pvt_t_fpn_1x_coco.py')
    parser.add_argument('--images', type=int, default=2, help='images per timed training step (0: none)')
    parser.add_argument('--size', type=int, default=512)
    parser.add_argument('--repeat', type=int, default=50, help='timings of the check and of the AdamW step')
    parser.add_argument('--steps', type=int, default=5, help='whole training steps of each kind')
    parser.add_argument('--ranks', type=int, default=2, help='gloo processes for the all-reduce (0: skip)')
    args = parser.parse_args()
    guard_cost(args)
    if args.ranks:
        import socket

        with socket.socket() as sock:
            sock.bind(('127.0.0.1', 0))
            port = sock.getsockname()[1]
        mp.spawn(_all_reduce_worker, args=(args.ranks, port, args.repeat * 20), nprocs=args.ranks)


if __name__ == '__main__':
    main()
