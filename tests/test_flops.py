"""The MAC counter: the paper's GFLOPs, attention products, whole configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from mmpvt import ARCH_SETTINGS
from mmpvt.analysis import backbone_macs, config_macs, count_macs
from mmpvt.layers import SpatialReductionAttention, sra_macs

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(('arch', 'paper_gflops'), [('tiny', 1.9), ('small', 3.8), ('medium', 6.7), ('large', 9.8)])
def test_backbone_at_224_reproduces_the_paper(arch: str, paper_gflops: float) -> None:
    count = backbone_macs(arch, (224, 224))
    assert count.gflops == pytest.approx(paper_gflops, rel=0.05)
    assert count.total == sum(count.by_kind.values())
    assert count.by_kind['attention'] > 0 and count.by_kind['conv'] > 0


@pytest.mark.parametrize('arch', ['tiny', 'small', 'medium', 'large'])
def test_v1_convolutions_are_counted_exactly(arch: str) -> None:
    """At 224×224: stage i's patch embedding is a kernel = stride = p_i conv from C_(i-1) to C_i channels on an
    (H_(i-1) / p_i)² output map; each SR conv (r > 1) has H_i·W_i / r² outputs of C_i·C_i·r² multiply-adds."""
    settings = ARCH_SETTINGS[arch]
    count = backbone_macs(arch, (224, 224))
    channels, side, patch_total, sr_total = 3, 224, 0, 0
    stages = zip(settings['embed_dims'], settings['patch_sizes'], settings['sr_ratios'], settings['depths'])
    for i, (dims, patch, ratio, depth) in enumerate(stages):
        side //= patch
        patch_macs = side * side * dims * channels * patch * patch
        counted = sum(v for k, v in count.by_module.items() if k.startswith(f'stages.{i}.patch_embed'))
        assert counted == patch_macs, i  # as a GEMM (under patch_embed) or a conv call (under patch_embed.proj)
        patch_total += patch_macs
        if ratio > 1:
            sr_total += depth * (side // ratio) ** 2 * dims * dims * ratio * ratio
        channels = dims
    if arch == 'tiny':  # 56²·64·3·16 + 28²·128·64·4 + 14²·320·128·4 + 7²·512·320·4
        assert patch_total == 9_633_792 + 25_690_112 + 32_112_640 + 32_112_640
    assert count.by_kind['conv'] == patch_total + sr_total


def test_pvtv2_b2_reproduces_the_paper() -> None:
    assert backbone_macs('b2', (224, 224)).gflops == pytest.approx(4.0, rel=0.05)


def test_attention_products_of_pvt_small_sum_the_layers() -> None:
    """At 224×224 the maps are 56², 28², 14², 7²; keys 7² in every stage (r = 8, 4, 2, 1)."""
    depths, dims = (3, 4, 6, 3), (64, 128, 320, 512)
    expected = sum(d * 2 * (s * s) * 49 * c for d, c, s in zip(depths, dims, (56, 28, 14, 7)))
    count = backbone_macs('small', (224, 224))
    assert count.by_kind['attention'] == expected


def test_count_scales_with_batch_and_matches_known_layer_costs() -> None:
    layer = SpatialReductionAttention(64, 1, sr_ratio=8).eval()
    x = torch.randn(2, 56 * 56, 64)
    count = count_macs(layer, lambda m: m(x, (56, 56)))
    qk_av = sra_macs((56, 56), 64, 8)  # Q·Kᵀ and A·V of one image
    projections = 2 * 3136 * (64 * 64 * 2) + 2 * 49 * 64 * 128  # q and proj over all tokens, kv over keys
    reduction = 2 * 49 * 64 * 64 * 8 * 8
    assert count.by_kind['attention'] == 2 * qk_av  # batch of 2
    assert count.by_kind['linear'] == projections
    assert count.by_kind['conv'] == reduction


def test_multihead_attention_counts_projections_and_products() -> None:
    mha = nn.MultiheadAttention(32, 4, batch_first=True)
    q, kv = torch.randn(1, 10, 32), torch.randn(1, 6, 32)
    count = count_macs(mha, lambda m: m(q, kv, kv))
    assert count.total == 10 * 32 * 32 * 2 + 6 * 32 * 32 * 2 + 2 * 10 * 6 * 32


def test_whole_config_includes_backbone_attention() -> None:
    pytest.importorskip('mmdet')
    import mmpvt  # noqa: F401

    config = str(REPO / 'configs' / 'retinanet_pvt_t_fpn_1x_coco.py')
    whole = config_macs(config, (256, 320))
    backbone = config_macs(config, (256, 320), backbone_only=True)
    assert backbone.by_kind['attention'] == backbone_macs('tiny', (256, 320)).by_kind['attention']
    assert whole.total > backbone.total
    assert whole.by_kind['attention'] == backbone.by_kind['attention']


def test_torch_flop_counter_sees_every_layer_of_the_plain_model() -> None:
    """PVT-T at 224: torch's FlopCounterMode (told how to count the CPU flash-attention op) agrees exactly
    with the hook counter, ≈1.93 GMAC (the fused inference kernels it cannot see are not in the plain model)."""
    from torch.utils.flop_counter import FlopCounterMode

    from mmpvt.analysis import SDPA_CPU_FLOP_FORMULA
    from mmpvt.models.pvt import PyramidVisionTransformer

    model = PyramidVisionTransformer.from_arch('tiny').eval()
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=SDPA_CPU_FLOP_FORMULA) as counter:
        model(torch.zeros(1, 3, 224, 224))
    macs = counter.get_total_flops() // 2
    assert macs == backbone_macs('tiny', (224, 224)).total
    assert macs == pytest.approx(1.93e9, rel=0.01)
