"""mmcv's compiled ops on the GPU against independent references, run as a subprocess once the CUDA build
is installed: ``python -m gpucheck.ops --json F``.

* ``mmcv.ops.nms`` on CUDA against torchvision's ``nms`` (on the image, its own kernels) on the same boxes;
* ``mmcv.ops.sigmoid_focal_loss`` (RetinaNet's loss) on CUDA against the formula in plain torch, forward and
  gradient.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict

import torch

from .report import Check


def random_boxes(n: int, gen: torch.Generator) -> torch.Tensor:
    xy = torch.rand(n, 2, generator=gen) * 500
    wh = torch.rand(n, 2, generator=gen) * 100 + 1
    return torch.cat([xy, xy + wh], dim=1)


def nms_check(device: str) -> Check:
    from mmcv.ops import nms

    start = time.monotonic()
    gen = torch.Generator().manual_seed(0)
    boxes, scores = random_boxes(2000, gen), torch.rand(2000, generator=gen)
    _, keep = nms(boxes.to(device), scores.to(device), iou_threshold=0.5)
    try:
        import torchvision

        ref = torchvision.ops.nms(boxes.to(device), scores.to(device), 0.5).cpu()
        against = 'torchvision.ops.nms'
    except ImportError:  # the CPU rehearsal: mmcv's own CPU kernel
        _, ref = nms(boxes, scores, iou_threshold=0.5)
        against = "mmcv's CPU nms (no torchvision here)"
    same = torch.equal(keep.cpu().sort().values, ref.sort().values)
    figure = f'{device}: {keep.numel()} of 2000 boxes kept, {"the same" if same else "NOT the same"} as {against}'
    return Check('mmcv ops', 'nms', 'pass' if same else 'fail', figure, round(time.monotonic() - start, 1))


def focal_loss_check(device: str) -> Check:
    from mmcv.ops import sigmoid_focal_loss

    if device != 'cuda':
        return Check('mmcv ops', 'sigmoid_focal_loss', 'not run', 'mmcv has no CPU kernel for it (CUDA only)')
    start = time.monotonic()
    gen = torch.Generator().manual_seed(1)
    logits = (torch.randn(512, 80, generator=gen) * 3).to(device).requires_grad_()
    target = torch.randint(0, 81, (512,), generator=gen).to(device)  # 80 = background
    loss = sigmoid_focal_loss(logits, target, 2.0, 0.25, None, 'sum')
    (grad,) = torch.autograd.grad(loss, logits)
    ref_logits = logits.detach().double().requires_grad_()
    one_hot = torch.nn.functional.one_hot(target, 81)[:, :80].double()
    p = ref_logits.sigmoid()
    pt = p * one_hot + (1 - p) * (1 - one_hot)
    alpha = 0.25 * one_hot + 0.75 * (1 - one_hot)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(ref_logits, one_hot, reduction='none')
    ref = (alpha * (1 - pt) ** 2 * bce).sum()
    (ref_grad,) = torch.autograd.grad(ref, ref_logits)
    rel = abs(loss.item() - ref.item()) / ref.item()
    rel_grad = ((grad.double() - ref_grad).abs().max() / ref_grad.abs().max()).item()
    ok = rel <= 1e-5 and rel_grad <= 1e-4
    figure = f'{device}: loss {rel:.1e}, gradient {rel_grad:.1e} of scale from the formula (bounds 1e-5, 1e-4)'
    return Check('mmcv ops', 'sigmoid_focal_loss', 'pass' if ok else 'fail', figure, round(time.monotonic() - start, 1))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="mmcv's compiled ops against references; writes JSON")
    parser.add_argument('--device', default='cuda', choices=['cuda', 'cpu'])
    parser.add_argument('--json', required=True)
    args = parser.parse_args(argv)
    checks = []
    for fn in (nms_check, focal_loss_check):
        try:
            checks.append(fn(args.device))
        except Exception as err:  # reported as a failed check with the others
            checks.append(Check('mmcv ops', fn.__name__.removesuffix('_check'), 'fail', f'{type(err).__name__}: {err}'))
    with open(args.json, 'w') as f:
        json.dump([asdict(c) for c in checks], f, indent=2)
    return 0


if __name__ == '__main__':
    raise SystemExit(main())
