"""``--amp`` on the CPU: bfloat16 autocast trains the toy RetinaNet-PVT-T with finite losses, and a
non-finite loss is skipped and reported by the loss scaler instead of reaching the weights."""

from __future__ import annotations

import copyreg
import functools
import logging
import math
import pickle
from pathlib import Path

import pytest
import torch
from helpers import TOY_CONFIGS, captured_log, logged_records, small_config
from mmengine.config import Config
from torch import nn

from mmpvt.engine.fp32_islands import Fp32Forward, Fp32Proposals, fp32_islands
from mmpvt.engine.hooks import CpuFastPathsHook
from mmpvt.engine.optim import CpuAmpOptimWrapper
from mmpvt.launch import ConfigError
from mmpvt.launch import main as launch
from mmpvt.launch.config_checks import amp_inference, amp_optim_wrapper
from mmpvt.models.cpu_features import choose_cpu_dtype
from mmpvt.models.cpu_inference import CpuAutocastEntry, _restore_mixed, autocast_inference


@pytest.mark.slow
def test_amp_trains_the_toy_retinanet(toy_coco: Path, tmp_path: Path) -> None:
    config = small_config(tmp_path / 'small.py', toy_coco, max_epochs=7)  # 7 epochs × 4 = 28 iterations
    # 128-pixel inputs, the toy configs' size. At 64 pixels RetinaNet's P6 map is 1×1, and torch 2.13's CPU
    # bfloat16 weight gradient of a convolution over a 1×1 map is wrong (docs/reliability.md): the scaler
    # then skips those steps, as it should, but the run is not the clean one this test is about.
    size = ['--cfg-options', 'train_dataloader.dataset.pipeline.2.scale=(128,128)']
    # --amp-dtype bfloat16: bf16 whatever the CPU (--amp alone stays fp32 on a CPU without a bf16 matrix unit)
    launch.train([str(config), '--work-dir', str(tmp_path / 'work'), '--amp-dtype', 'bfloat16', *size])
    records = logged_records(tmp_path / 'work')
    losses = [r['loss'] for r in records if 'loss' in r]
    assert len(losses) == 28
    assert all(math.isfinite(loss) for loss in losses), losses
    grad_norms = [r['grad_norm'] for r in records]  # NaN whenever a step of the last 10 had non-finite gradients
    assert all(math.isfinite(norm) for norm in grad_norms), grad_norms
    log = next(tmp_path.glob('work/*/*.log')).read_text()
    assert "type='CpuAmpOptimWrapper'" in log  # the run really used the CPU mixed-precision wrapper
    assert 'step skipped' not in log


def test_amp_picks_the_wrapper_for_the_device() -> None:
    """A GPU: float16 AMP. A CPU: bf16 AMP where it pays (a bf16 matrix unit), else the fp32 wrapper stays."""
    optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-4))
    amp_optim_wrapper(optim_wrapper)
    if torch.cuda.is_available():
        expected = 'AmpOptimWrapper'
    else:
        expected = 'CpuAmpOptimWrapper' if choose_cpu_dtype('auto').dtype == torch.bfloat16 else 'OptimWrapper'
    assert optim_wrapper['type'] == expected
    assert optim_wrapper['optimizer'] == dict(type='AdamW', lr=1e-4)


def test_test_amp_picks_the_inference_precision_for_the_device() -> None:
    cfg = Config(dict(custom_hooks=[dict(type='CpuFastPathsHook'), dict(type='EMAHook')], test_cfg=dict()))
    amp_inference(cfg)
    if torch.cuda.is_available():
        assert cfg.test_cfg.fp16 is True
    else:  # one CpuFastPathsHook, choosing by the hardware; the config's other hooks stay
        assert cfg.custom_hooks == [dict(type='EMAHook'), dict(type='CpuFastPathsHook', dtype='auto')]


def test_the_hook_refuses_an_unknown_dtype_when_built() -> None:
    with pytest.raises(ValueError, match='unknown CPU dtype'):
        CpuFastPathsHook(dtype='half')


def test_amp_dtype_on_the_cpu_is_bfloat16_only() -> None:
    if torch.cuda.is_available():
        pytest.skip('this machine has CUDA')
    optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-4))
    amp_optim_wrapper(optim_wrapper, 'bfloat16')
    assert optim_wrapper['type'] == 'CpuAmpOptimWrapper' and 'dtype' not in optim_wrapper
    with pytest.raises(
        ConfigError, match=r'--amp-dtype float16 needs a GPU: .* \(use --amp, or --amp-dtype bfloat16\)'
    ):
        amp_optim_wrapper(dict(type='OptimWrapper'), 'float16')


@pytest.mark.parametrize(('speedup', 'level'), [(0.02, logging.WARNING), (2.0, logging.INFO)])
def test_amp_dtype_bfloat16_warns_where_it_is_slower(
    monkeypatch: pytest.MonkeyPatch, speedup: float, level: int
) -> None:
    """``--amp-dtype bfloat16`` on a CPU without AMX (simulated: AVX2 only, the Zen 1 EPYC measured 0.02×)."""
    if torch.cuda.is_available():
        pytest.skip('this machine has CUDA')
    no_amx = functools.partial(choose_cpu_dtype, flags={'avx2'}, measure=lambda: speedup)
    monkeypatch.setattr('mmpvt.launch.config_checks.choose_cpu_dtype', no_amx)
    optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-4))
    with captured_log(logging.INFO) as records:
        amp_optim_wrapper(optim_wrapper, 'bfloat16')
    assert optim_wrapper['type'] == 'CpuAmpOptimWrapper'  # honoured either way
    said = [r for r in records if '--amp on the CPU: training runs in bfloat16 (as requested' in r.getMessage()]
    assert [r.levelno for r in said] == [level]
    assert ('expect it slower than fp32' in said[0].getMessage()) is (level == logging.WARNING)


def test_forward_runs_in_bfloat16() -> None:
    model = nn.Linear(4, 4)
    wrapper = CpuAmpOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    with wrapper.optim_context(model):
        out = model(torch.ones(2, 4))
    assert out.dtype == torch.bfloat16


def test_non_finite_loss_is_skipped_and_reported() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    wrapper = CpuAmpOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    before = [p.detach().clone() for p in model.parameters()]
    scale = wrapper.loss_scaler.get_scale()

    with captured_log(logging.WARNING) as records:
        with wrapper.optim_context(model):
            loss = model(torch.ones(2, 4)).sum() * float('inf')
        wrapper.update_params(loss)

    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # the step was skipped
    assert wrapper.skipped_steps == 1
    assert wrapper.loss_scaler.get_scale() == scale / 2
    assert any('non-finite gradients (inf or NaN loss); step skipped' in r.getMessage() for r in records)

    with wrapper.optim_context(model):
        loss = model(torch.ones(2, 4)).sum()
    wrapper.update_params(loss)  # the next finite step updates the weights again
    assert not torch.equal(before[0], model.weight)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert wrapper.skipped_steps == 1


def toy_mask_rcnn() -> nn.Module:
    """The toy Mask R-CNN-PVT-T, built through mmdet's registry (random weights; no data read)."""
    from mmdet.registry import MODELS as MMDET_MODELS
    from mmengine.registry import DefaultScope

    cfg = Config.fromfile(str(TOY_CONFIGS / 'mask_rcnn_pvt_t_fpn_toy_coco.py'))
    cfg.model.backbone.init_cfg = None
    with DefaultScope.overwrite_default_scope('mmdet'):
        return MMDET_MODELS.build(cfg.model)


def test_a_two_stage_detectors_nms_and_roi_align_run_in_fp32_under_cpu_autocast() -> None:
    """mmcv's CPU nms and roi_align take fp32 only: under bf16 autocast they get fp32 copies, the rest stays bf16."""
    from mmdet.models.dense_heads import RPNHead

    torch.manual_seed(0)
    model = toy_mask_rcnn()
    wrapped = nn.ModuleDict(dict(module=model))  # a distributed wrapper holds the model as ``module``
    rois = ['roi_head.bbox_roi_extractor', 'roi_head.mask_roi_extractor']
    assert fp32_islands(wrapped) == (['rpn_head'], rois)
    assert fp32_islands(model) == ([], [])  # once
    assert isinstance(model.rpn_head, Fp32Proposals) and isinstance(model.roi_head.bbox_roi_extractor, Fp32Forward)
    feats = [torch.randn(1, 256, 64 // 2**i, 64 // 2**i, requires_grad=True) for i in range(5)]  # FPN's maps
    rois = torch.tensor([[0.0, 4.0, 4.0, 40.0, 36.0], [0.0, 0.0, 8.0, 63.0, 60.0]])
    meta = dict(img_shape=(256, 256), scale_factor=(1.0, 1.0))
    with torch.autocast('cpu', torch.bfloat16):
        maps = [f.bfloat16() for f in feats]  # as the autocast FPN hands them on
        pooled = model.roi_head.bbox_roi_extractor(maps[:4], rois)
        assert pooled.dtype == torch.float32 and pooled.shape == (2, 256, 7, 7)
        assert model.roi_head.bbox_head.shared_fcs[0](pooled.flatten(1)).dtype == torch.bfloat16  # not an island
        cls_scores, bbox_preds = model.rpn_head(maps)
        assert cls_scores[0].dtype == torch.bfloat16
        (proposals,) = model.rpn_head.predict_by_feat(cls_scores, bbox_preds, batch_img_metas=[meta], rescale=False)
    assert proposals.bboxes.dtype == torch.float32 and len(proposals) > 0
    pooled.sum().backward()  # gradients reach the bf16 maps through the fp32 copies
    assert feats[0].grad is not None and feats[0].grad.abs().sum() > 0
    with torch.no_grad():  # outside autocast: the plain fp32 forward
        plain = model.roi_head.bbox_roi_extractor(feats[:4], rois)
    torch.testing.assert_close(pooled.detach(), plain, rtol=2e-2, atol=2e-2)  # bf16 maps, fp32 pooling
    loaded = pickle.loads(pickle.dumps(model))
    assert isinstance(loaded.rpn_head, Fp32Proposals) and type(loaded.rpn_head) is type(model.rpn_head)
    restore, (_, mixins, plain, *_) = model.rpn_head.__reduce_ex__(pickle.HIGHEST_PROTOCOL)[:2]
    assert restore is _restore_mixed and mixins == (Fp32Proposals,) and plain is RPNHead  # pickled by mmdet's class


def test_the_cpu_amp_wrapper_makes_the_islands_once_and_says_so() -> None:
    model = toy_mask_rcnn()
    wrapper = CpuAmpOptimWrapper(optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    with captured_log(logging.INFO) as records:
        for _ in range(2):
            with wrapper.optim_context(model):
                assert torch.is_autocast_enabled('cpu')
    said = [r.getMessage() for r in records if 'inside the bf16 autocast region' in r.getMessage()]
    assert said == [
        '--amp on the CPU: box post-processing (predict_by_feat: decoding, NMS) of rpn_head and RoI extraction of '
        'roi_head.bbox_roi_extractor, roi_head.mask_roi_extractor in fp32 inside the bf16 autocast region '
        "(mmcv's CPU nms and roi_align take fp32 only; box coordinates need fp32)"
    ]
    assert isinstance(model.roi_head.mask_roi_extractor, Fp32Forward)


def test_a_head_with_two_runtime_mixins_pickles_with_both() -> None:
    """A config's CpuFastPathsHook(dtype='bfloat16') autocasts the RPN head at validation; --amp training makes
    it an fp32 island too. Pickled, it names mmdet's RPNHead and gets both back (and the old one-mixin form loads)."""
    head = toy_mask_rcnn().rpn_head
    autocast_inference(head)
    fp32_islands(head)
    loaded = pickle.loads(pickle.dumps(head))
    assert type(loaded) is type(head) and loaded.cpu_autocast_dtype == torch.bfloat16
    assert isinstance(loaded, Fp32Proposals) and isinstance(loaded, CpuAutocastEntry)
    plain = type(head).__bases__[1].__bases__[1]
    assert plain.__name__ == 'RPNHead' and plain.__module__ == 'mmdet.models.dense_heads.rpn_head'
    old_form = _restore_mixed(copyreg.__newobj__, Fp32Proposals, plain)  # what a single mixin pickled as before
    assert isinstance(old_form, Fp32Proposals) and type(old_form).__bases__ == (Fp32Proposals, plain)
