"""Attention and feature pictures: the maps are real attention distributions, the PNGs get written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import checkout_env

from mmpvt import PVT
from mmpvt.visualization import image_to_tensor, stage_attention

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize('arch', ['tiny', 'b2_li'])
def test_stage_attention_is_a_distribution_over_the_reduced_keys(arch: str) -> None:
    torch.manual_seed(0)
    model = PVT(arch, depths=(1, 1, 1, 1)).eval()
    rgb = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    maps, outs = stage_attention(model, image_to_tensor(rgb), (100, 40))
    assert len(maps) == 4 and len(outs) == 4
    for m, stride in zip(maps, (4, 8, 16, 32)):
        assert m.map_hw == (96 // stride, 128 // stride)
        assert m.weights.shape == model.stages[m.stage].blocks[-1].attn.reduced_shape(m.map_hw)
        assert m.query_hw == (40 // stride, 100 // stride)
        assert abs(float(m.weights.sum()) - 1.0) < 1e-5 and (m.weights >= 0).all()
    with pytest.raises(ValueError, match='outside the 128×96 image'):
        stage_attention(model, image_to_tensor(rgb), (130, 10))


@pytest.mark.parametrize('arch', ['tiny', 'b2_li'])
def test_stage_attention_reproduces_the_sra_output_at_the_query(arch: str) -> None:
    """With one head per stage the map is that head's attention: weights @ V through ``proj`` must be
    the SRA layer's output at the query token, and that output the one the model's forward used."""
    torch.manual_seed(0)
    model = PVT(arch, depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1)).eval()
    rgb = np.random.default_rng(0).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    seen: dict[int, tuple[torch.Tensor, tuple[int, int], torch.Tensor]] = {}
    hooks = [
        stage.blocks[-1].register_forward_hook(lambda _m, args, out, i=i: seen.__setitem__(i, (*args, out)))
        for i, stage in enumerate(model.stages)
    ]
    try:
        maps, _ = stage_attention(model, image_to_tensor(rgb), (100, 40))
    finally:
        for hook in hooks:
            hook.remove()
    with torch.no_grad():
        for m in maps:
            block, (x, hw, block_out) = model.stages[m.stage].blocks[-1], seen[m.stage]
            tokens = block.norm1(x)  # what the attention reads: (1, N, C)
            attn_out = block.attn(tokens, hw)  # the SRA layer's output, (1, N, C)
            c = x.shape[-1]
            values = block.attn.kv(block.attn.reduced_tokens(tokens, hw))[0, :, c:]  # (M, C)
            weights = torch.from_numpy(m.weights).reshape(1, -1)  # (1, M)
            query = m.query_hw[0] * hw[1] + m.query_hw[1]
            torch.testing.assert_close(block.attn.proj(weights @ values)[0], attn_out[0, query], rtol=1e-4, atol=1e-6)
            # the block's residual form around that output gives what the model computed
            y = x + attn_out
            torch.testing.assert_close(y + block.mlp(block.norm2(y), hw), block_out, rtol=1e-4, atol=1e-4)


def test_vis_attention_tool_writes_both_pictures(tmp_path: Path) -> None:
    import cv2

    image = tmp_path / 'shapes.png'
    canvas = np.full((96, 128, 3), 30, np.uint8)
    cv2.circle(canvas, (40, 48), 20, (0, 0, 255), -1)
    cv2.imwrite(str(image), canvas)
    out, feats = tmp_path / 'attention.png', tmp_path / 'features.png'
    tool = ROOT / 'tools' / 'analysis' / 'vis_attention.py'
    args = [str(tool), str(image), '--arch', 'tiny', '--query', '40', '48', '--out', str(out)]
    result = subprocess.run(
        [sys.executable, *args, '--features-out', str(feats)], capture_output=True, text=True, env=checkout_env()
    )
    assert result.returncode == 0, result.stderr[-2000:]
    for png in (out, feats):
        assert png.read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert 'stage 4: 3×4 queries, 3×4 keys' in result.stdout
