"""The core needs torch alone: with the OpenMMLab stack blocked, the layers and the model import, build and run."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from helpers import checkout_env

OPENMMLAB = ('mmengine', 'mmcv', 'mmdet', 'mmseg')

CORE_WITHOUT_OPENMMLAB = textwrap.dedent(
    """
    import json
    import sys

    for name in {blocked!r}:
        sys.modules[name] = None  # import name now raises ImportError

    import torch

    import mmpvt
    import mmpvt.layers
    from mmpvt.models.pvt import PyramidVisionTransformer

    model = PyramidVisionTransformer(depths=(1, 1, 1, 1))
    outs = model(torch.randn(1, 3, 67, 61))
    outs[-1].sum().backward()
    attention = mmpvt.layers.SpatialReductionAttention(64, num_heads=2, sr_ratio=2)
    tokens = attention(torch.randn(2, 8 * 6, 64), (8, 6))
    model.eval()
    image = torch.randn(1, 3, 67, 61)
    with torch.no_grad():
        plain = model(image)
        fast = mmpvt.optimize_for_cpu_inference(model)(image)
    print(json.dumps(dict(
        shapes=[list(out.shape) for out in outs],
        sra_shape=list(tokens.shape),
        finite=all(bool(out.isfinite().all()) for out in outs),
        gradients=all(p.grad is not None for p in model.parameters()),
        exported=sorted(mmpvt.__all__),
        fast_matches=all(bool(torch.allclose(a, b, atol=1e-4)) for a, b in zip(plain, fast)),
    )))
    """
)


def test_core_imports_builds_and_runs_without_openmmlab() -> None:
    code = CORE_WITHOUT_OPENMMLAB.format(blocked=OPENMMLAB)
    proc = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=checkout_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    # 67x61 floors to 16x15 after the stride-4 patch embedding, then halves (floored) per stage.
    assert result['shapes'] == [[1, 64, 16, 15], [1, 128, 8, 7], [1, 320, 4, 3], [1, 512, 2, 1]]
    assert result['sra_shape'] == [2, 48, 64]
    assert result['finite'] and result['gradients']
    assert result['fast_matches']  # the CPU fast paths are part of the torch-only core too
    # Without mmengine the package offers the core only; the registered backbones need it.
    assert result['exported'] == [
        'ARCH_SETTINGS',
        'PyramidVisionTransformer',
        'SpatialReductionAttention',
        '__version__',
        'optimize_for_cpu_inference',
        'sra_macs',
    ]
