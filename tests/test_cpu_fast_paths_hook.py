"""The CPU fast paths reach the Runner's model: our tools add ``CpuFastPathsHook``, a config can name it."""

from __future__ import annotations

import copy
import functools
import logging
from pathlib import Path

import pytest
import torch
from helpers import captured_log, toy_config
from mmengine.runner import Runner

from mmpvt.engine.hooks import CpuFastPathsHook, LabelValuesHook
from mmpvt.engine.hooks.cpu_fast_paths import _plain_head
from mmpvt.launch.main import build_runner
from mmpvt.models import cpu_inference
from mmpvt.models.cpu_features import choose_cpu_dtype
from mmpvt.models.cpu_inference import CpuAutocastEntry, CpuPrecisionEntry, PatchGemmConv2d

CAST_CACHE = '_cast_weights'  # where cast_weight keeps its copies on a module


def patch_gemms(model: torch.nn.Module) -> int:
    return sum(isinstance(module, PatchGemmConv2d) for module in model.modules())


def flat(out: object) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for item in out for t in flat(item)]


def check_fast_and_equal(runner: Runner) -> None:
    """Before the run the model is plain; ``before_run`` swaps the fast paths in without changing its outputs."""
    model = runner.model.eval()
    plain = copy.deepcopy(model)
    assert patch_gemms(model) == 0
    runner.call_hook('before_run')
    assert patch_gemms(model) == 4 + 2 + 2 + 2  # PVT-T: 4 patch embeddings, the SR convs of 2 blocks in stages 1-3
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for ours, theirs in zip(model.backbone(image), plain.backbone(image)):
            torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    assert model.state_dict().keys() == plain.state_dict().keys()
    assert not any(isinstance(module, CpuAutocastEntry) for module in model.modules())  # fp32: no autocast


def bf16_runner(config: str, data: Path, tmp_path: Path) -> tuple[Runner, torch.nn.Module, torch.nn.Module]:
    """A toy config with ``CpuFastPathsHook(dtype='bfloat16')`` after ``before_run``; ``plain``: the model before."""
    cfg = toy_config(config, data, tmp_path)
    cfg.custom_hooks = [dict(type='CpuFastPathsHook', dtype='bfloat16')]
    runner = build_runner(cfg)
    model = runner.model.eval()
    plain = copy.deepcopy(model)
    runner.call_hook('before_run')
    return runner, model, plain


def test_our_tools_add_the_hook(toy_coco: Path, tmp_path: Path) -> None:
    runner = build_runner(toy_config('retinanet_pvt_t_fpn_toy_coco', toy_coco, tmp_path))
    check_fast_and_equal(runner)


def test_a_config_names_the_hook_for_stock_tools(toy_coco: Path, tmp_path: Path) -> None:
    cfg = toy_config('retinanet_pvt_t_fpn_toy_coco', toy_coco, tmp_path)
    cfg.custom_hooks = [dict(type='CpuFastPathsHook')]
    check_fast_and_equal(Runner.from_cfg(cfg))


def test_a_model_off_the_cpu_is_left_as_it_is(toy_coco: Path, tmp_path: Path) -> None:
    """On a GPU no shortcut applies: the hook leaves the module tree alone (``meta`` stands in for CUDA)."""
    runner = build_runner(toy_config('retinanet_pvt_t_fpn_toy_coco', toy_coco, tmp_path))
    runner.model.to('meta')
    runner.call_hook('before_run')
    assert patch_gemms(runner.model) == 0


def test_hooks_a_config_names_are_not_added_twice(toy_coco: Path, tmp_path: Path) -> None:
    """A config naming EarlyChecksHook (a LabelValuesHook) and CpuFastPathsHook gets one of each from our tools."""
    cfg = toy_config('retinanet_pvt_t_fpn_toy_coco', toy_coco, tmp_path)
    cfg.custom_hooks = [dict(type='EarlyChecksHook'), dict(type='CpuFastPathsHook')]
    runner = build_runner(cfg)
    assert sum(isinstance(hook, LabelValuesHook) for hook in runner.hooks) == 1
    assert sum(isinstance(hook, CpuFastPathsHook) for hook in runner.hooks) == 1


def test_the_runners_table_of_hooks_lists_the_hooks_our_tools_add(toy_coco: Path, tmp_path: Path) -> None:
    """mmengine logs its hooks by stage when it builds the Runner: ours are added through the config, so they show."""
    runner = build_runner(toy_config('retinanet_pvt_t_fpn_toy_coco', toy_coco, tmp_path))
    table = runner.get_hooks_info()
    before_run = table.split('before_run:')[1].split('\n\n')[0]
    assert 'CpuFastPathsHook' in before_run
    assert '(VERY_HIGH   ) LabelValuesHook' in table.split('before_train_iter:')[1].split('\n\n')[0]


def test_the_hook_runs_validation_in_bf16_on_fresh_weight_copies(toy_coco: Path, tmp_path: Path) -> None:
    """``dtype='bfloat16'``: the backbone's inference runs in bf16; the copies are dropped before each validation."""
    runner, model, plain = bf16_runner('retinanet_pvt_t_fpn_toy_coco', toy_coco, tmp_path)
    assert isinstance(model.backbone, CpuPrecisionEntry) and model.backbone.cpu_dtype == torch.bfloat16
    image = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        ours, theirs = model.backbone(image), plain.backbone(image)
        scale = max(t.abs().max().item() for t in theirs)
        assert max((a - b).abs().max().item() for a, b in zip(ours, theirs)) <= 3e-2 * scale
        assert any(CAST_CACHE in vars(m) for m in model.modules())
    hook = next(h for h in runner.hooks if isinstance(h, CpuFastPathsHook))
    hook.before_val_iter(runner, batch_idx=0)
    assert not any(CAST_CACHE in vars(m) for m in model.modules())


def test_the_hook_warns_where_its_bf16_is_slower(
    monkeypatch: pytest.MonkeyPatch, toy_coco: Path, tmp_path: Path
) -> None:
    """``dtype='bfloat16'`` in a config run on a CPU without AMX (simulated: AVX2 only): honoured, with a warning."""
    no_amx = functools.partial(choose_cpu_dtype, flags={'avx2'}, measure=lambda: 0.02)
    monkeypatch.setattr('mmpvt.engine.hooks.cpu_fast_paths.choose_cpu_dtype', no_amx)
    cfg = toy_config('retinanet_pvt_t_fpn_toy_coco', toy_coco, tmp_path)
    cfg.custom_hooks = [dict(type='CpuFastPathsHook', dtype='bfloat16')]
    runner = build_runner(cfg)
    with captured_log(logging.WARNING) as records, captured_log(logging.WARNING, cpu_inference.logger) as inner:
        runner.call_hook('before_run')  # the Runner's logger is mmengine's current one now
    assert runner.model.backbone.cpu_dtype == torch.bfloat16
    said = [r.getMessage() for r in records if 'CPU inference of the PVT backbone runs in bfloat16' in r.getMessage()]
    assert len(said) == 1 and 'a bf16 GEMM measured 0.02× fp32, so expect it slower than fp32' in said[0]
    assert inner == []  # said once, in the run's log: optimize_for_cpu_inference leaves a given choice to its caller


def test_with_bf16_the_neck_and_head_run_under_autocast_and_hand_on_fp32(toy_coco: Path, tmp_path: Path) -> None:
    """RetinaNet: the head's convs compute in bf16; what box decoding and NMS read stays fp32."""
    _, model, plain = bf16_runner('retinanet_pvt_t_fpn_toy_coco', toy_coco, tmp_path)
    assert isinstance(model.neck, CpuAutocastEntry) and isinstance(model.bbox_head, CpuAutocastEntry)
    seen = {}
    model.bbox_head.retina_cls.register_forward_hook(lambda _m, inp, out: seen.update(cls=(inp[0].dtype, out.dtype)))
    image = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        ours = flat(model.bbox_head(model.extract_feat(image)))
        theirs = flat(plain.bbox_head(plain.extract_feat(image)))
    assert seen['cls'] == (torch.bfloat16, torch.bfloat16)
    assert all(out.dtype == torch.float32 for out in ours) and len(ours) == len(theirs) == 10  # 5 levels × 2
    scale = max(t.abs().max().item() for t in theirs)
    assert max((a - b).abs().max().item() for a, b in zip(ours, theirs)) <= 3e-2 * scale
    with torch.enable_grad():  # training and autograd: the head's own fp32 forward
        assert all(out.dtype == torch.float32 for out in flat(model.bbox_head(model.extract_feat(image))))
    assert seen['cls'] == (torch.float32, torch.float32)


def test_with_bf16_a_segmentors_neck_and_decode_head_run_under_autocast(toy_ade: Path, tmp_path: Path) -> None:
    _, model, _ = bf16_runner('fpn_pvt_t_toy_ade', toy_ade, tmp_path)
    assert isinstance(model.neck, CpuAutocastEntry) and isinstance(model.decode_head, CpuAutocastEntry)
    with torch.no_grad():
        logits = model.decode_head(model.extract_feat(torch.randn(1, 3, 64, 64)))
    assert logits.dtype == torch.float32 and logits.shape[:2] == (1, 150)


def test_heads_with_their_own_arithmetic_are_not_autocast() -> None:
    """Mask2Former's head is an AnchorFreeHead but runs a transformer decoder and matching: it is left in fp32."""
    from mmdet.models.dense_heads import Mask2FormerHead, MaskFormerHead, RetinaHead
    from mmdet.models.roi_heads.bbox_heads import Shared2FCBBoxHead
    from mmseg.models.decode_heads import FPNHead

    def plain(cls: type) -> bool:
        return _plain_head(cls.__new__(cls))  # the class decides; no head needs building

    assert plain(RetinaHead) and plain(Shared2FCBBoxHead) and plain(FPNHead)
    assert not plain(MaskFormerHead) and not plain(Mask2FormerHead) and not plain(torch.nn.Conv2d)
