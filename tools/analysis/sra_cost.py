"""Cost of spatial-reduction attention against plain attention: counted and measured.

Usage:
    python tools/analysis/sra_cost.py [--out-dir work_dirs/sra_cost] [--dims 64] [--budget 2e10]

For reduction ratios r in {1, 2, 4, 8} and square images from 224 to 1333 pixels (the
stage-1 map is a quarter of that per side, C = d = 64 with one head, as in PVT's first
stage) it computes the attention multiply-adds with :func:`mmpvt.sra_macs` (Q·Kᵀ grows
as N², the reduced one as N²/r²) and times one SRA layer (inference, fastest of
``--repeats``). Layers whose Q·Kᵀ + A·V exceed ``--budget`` multiply-adds are counted
but not timed (r = 1 at 1333 pixels would take minutes). Writes ``sra_cost.csv`` and a
log-log ``sra_cost.png`` and prints the rows of the paper's 56×56 stage-1 map.
"""

from __future__ import annotations

import argparse
import csv
import time
from pathlib import Path

import torch

from mmpvt.launch.entry import run_tool
from mmpvt.layers import SpatialReductionAttention, sra_macs

RATIOS = (1, 2, 4, 8)
PIXELS = (224, 320, 448, 640, 800, 1024, 1333)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out-dir', default='work_dirs/sra_cost')
    parser.add_argument('--dims', type=int, default=64, help='channels C (one head, so d = C)')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--budget', type=float, default=2e10, help='largest attention MACs that are timed')
    return parser.parse_args(argv)


def time_layer(layer: SpatialReductionAttention, side: int, repeats: int) -> float:
    """Fastest of ``repeats`` forwards of ``layer`` on a side×side map (one image), in seconds.

    The minimum, not the median: on a shared machine it is the run least disturbed by
    other processes, the layer's own cost.
    """
    x = torch.randn(1, side * side, layer.embed_dims)
    with torch.inference_mode():
        layer(x, (side, side))
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            layer(x, (side, side))
            times.append(time.perf_counter() - start)
    return min(times)


def measure(args: argparse.Namespace) -> list[dict[str, float]]:
    torch.manual_seed(0)
    layers = {r: SpatialReductionAttention(args.dims, 1, r).eval() for r in RATIOS}
    rows = []
    for pixels in PIXELS:
        side = pixels // 4
        for r in RATIOS:
            qk = sra_macs((side, side), args.dims, r, include_av=False)
            total = 2 * qk
            seconds = time_layer(layers[r], side, args.repeats) if total <= args.budget else float('nan')
            rows.append(
                dict(
                    pixels=pixels,
                    side=side,
                    tokens=side * side,
                    r=r,
                    keys=(side // r) ** 2,
                    qk_macs=qk,
                    attention_macs=total,
                    layer_ms=seconds * 1e3,
                )
            )
            ms = seconds * 1e3
            print(f'{pixels:5d} px  {side:3d}×{side:<3d}  r={r}  Q·Kᵀ {qk:.3e}  layer {ms:9.2f} ms', flush=True)
    return rows


def plot(rows: list[dict[str, float]], path: Path) -> None:
    import matplotlib
    import matplotlib.ticker

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, (ax_macs, ax_time) = plt.subplots(1, 2, figsize=(11, 4.5))
    for r in RATIOS:
        mine = [row for row in rows if row['r'] == r]
        tokens = [row['tokens'] for row in mine]
        ax_macs.loglog(tokens, [row['qk_macs'] for row in mine], 'o-', label=f'r = {r}  (N²/{r * r})')
        timed = [row for row in mine if row['layer_ms'] == row['layer_ms']]  # drop NaN (not timed)
        ax_time.loglog([row['tokens'] for row in timed], [row['layer_ms'] for row in timed], 'o-', label=f'r = {r}')
    ax_macs.set(xlabel='tokens N = H·W (stage-1 map)', ylabel='Q·Kᵀ multiply-adds', title='Counted (mmpvt.sra_macs)')
    ax_time.set(xlabel='tokens N = H·W (stage-1 map)', ylabel='SRA layer time (ms)', title='Measured (CPU, inference)')
    secondary = ax_macs.secondary_xaxis('top', functions=(lambda t: 4 * t**0.5, lambda p: (p / 4) ** 2))
    secondary.set_xlabel('image side (pixels)')
    ax_time.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    for ax in (ax_macs, ax_time):
        ax.grid(True, which='both', alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> list[dict[str, float]]:
    args = parse_args(argv)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = measure(args)
    with open(out / 'sra_cost.csv', 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot(rows, out / 'sra_cost.png')

    side, c = 56, args.dims
    r1 = sra_macs((side, side), c, 1, include_av=False)
    r8 = sra_macs((side, side), c, 8, include_av=False)
    t1 = time_layer(SpatialReductionAttention(c, 1, 1).eval(), side, args.repeats * 3)
    t8 = time_layer(SpatialReductionAttention(c, 1, 8).eval(), side, args.repeats * 3)
    print(f'\n56×56 map, d = {c}: Q·Kᵀ {r1:.3g} multiply-adds at r = 1, {r8:.3g} at r = 8 ({r1 / r8:.0f}× fewer)')
    print(f'SRA layer (projections included): {t1 * 1e3:.2f} ms at r = 1, {t8 * 1e3:.2f} ms at r = 8', end='')
    print(f': {t1 / t8:.1f}× faster')
    print(f'wrote {out / "sra_cost.csv"} and {out / "sra_cost.png"}')
    return rows


if __name__ == '__main__':
    run_tool(main)
