"""The PVT backbone: shapes against the declared feature info, gradients, checkpointing, freezing."""

from __future__ import annotations

import pytest
import torch

from mmpvt import ARCH_SETTINGS, PVT, PyramidVisionTransformer
from mmpvt.models import pvt as pvt_module

V1_ARCHS = ['tiny', 'small', 'medium', 'large']
UNEVEN_SIZES = [(33, 33), (112, 137), (64, 96)]
SHAPE_DEPTHS = (1, 1, 1, 1)  # shapes depend on widths, strides and SR ratios, not on the number of blocks


def build(arch: str, **kwargs) -> PVT:
    torch.manual_seed(0)
    return PVT(arch, drop_path_rate=0.0, **kwargs)


def assert_pyramid(model: PVT, image_hw: tuple[int, int], outs: tuple[torch.Tensor, ...]) -> None:
    assert len(outs) == len(model.out_indices)
    shapes = model.stage_shapes(image_hw)
    for out, i, channels, stride in zip(outs, model.out_indices, model.out_channels, model.out_strides):
        assert out.shape == (1, channels, *shapes[i])
        if model.stages[0].patch_embed.padding == 0:
            # v1's non-overlapping patches floor: ⌊H / s⌋.
            assert out.shape[2:] == (image_hw[0] // stride, image_hw[1] // stride)
        else:
            # v2's padded overlapping patches round up: ⌈H / s⌉.
            assert out.shape[2:] == (-(-image_hw[0] // stride), -(-image_hw[1] // stride))
        assert torch.isfinite(out).all()


@pytest.mark.parametrize('arch', V1_ARCHS)
@pytest.mark.parametrize('image_hw', UNEVEN_SIZES)
def test_outputs_match_declared_feature_info(arch: str, image_hw: tuple[int, int]) -> None:
    model = build(arch, depths=SHAPE_DEPTHS).eval()
    assert model.out_channels == (64, 128, 320, 512)
    assert model.out_strides == (4, 8, 16, 32)
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *image_hw))
    assert_pyramid(model, image_hw, outs)


@pytest.mark.parametrize('arch', ['b0', 'b1', 'b2_li'])
@pytest.mark.parametrize('image_hw', [(31, 31), *UNEVEN_SIZES])
def test_v2_outputs_match_declared_feature_info(arch: str, image_hw: tuple[int, int]) -> None:
    model = build(arch, depths=SHAPE_DEPTHS).eval()
    assert model.out_strides == (4, 8, 16, 32)
    with torch.no_grad():
        outs = model(torch.randn(1, 3, *image_hw))
    assert_pyramid(model, image_hw, outs)
    assert all(stage.pos_embed is None and stage.norm is not None for stage in model.stages)


def test_v2_keeps_working_below_v1_minimum() -> None:
    """Overlapping patches with padding make 31×31 valid for v2 (mmdet's test size)."""
    model = build('b0', depths=SHAPE_DEPTHS).eval()
    assert model.min_input_size < 31
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 31, 31))
    assert [tuple(o.shape) for o in outs] == [(1, 32, 8, 8), (1, 64, 4, 4), (1, 160, 2, 2), (1, 256, 1, 1)]


def test_detection_size_tiny() -> None:
    model = build('tiny', depths=SHAPE_DEPTHS).eval()
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 800, 1333))
    assert_pyramid(model, (800, 1333), outs)
    assert [tuple(o.shape[2:]) for o in outs] == [(200, 333), (100, 166), (50, 83), (25, 41)]


def test_smallest_input_is_the_total_stride() -> None:
    model = build('tiny', depths=SHAPE_DEPTHS).eval()
    assert model.min_input_size == 32
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 32, 32))
    assert [tuple(o.shape[2:]) for o in outs] == [(8, 8), (4, 4), (2, 2), (1, 1)]
    # 31×31 leaves a 7×7 stage-1 map, below its sr_ratio 8: a clear error, not a crash deep inside.
    with pytest.raises(ValueError, match=r'31×31 pixels is too small.*at least 32'):
        model(torch.randn(1, 3, 31, 31))


GRADIENT_CASES = [(arch, (32, 32)) for arch in [*V1_ARCHS, 'b0', 'b2_li']] + [
    (arch, image_hw) for arch in ('tiny', 'b0', 'b2_li') for image_hw in ((33, 33), (112, 137))
]


@pytest.mark.parametrize(('arch', 'image_hw'), GRADIENT_CASES)
def test_every_parameter_gets_a_gradient(arch: str, image_hw: tuple[int, int]) -> None:
    model = build(arch).train()
    outs = model(torch.randn(2, 3, *image_hw))
    sum(o.square().mean() for o in outs).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not no_grad, f'parameters without gradient: {no_grad}'


@pytest.mark.parametrize('arch', ['tiny', 'small'])
def test_checkpointing_gives_the_same_outputs_and_gradients(arch: str) -> None:
    x = torch.randn(1, 3, 64, 80)
    results = []
    for with_cp in (False, True):
        model = build(arch, with_cp=with_cp).train()
        assert model.with_cp is with_cp
        outs = model(x)
        sum(o.sum() for o in outs).backward()
        results.append((outs, {n: p.grad for n, p in model.named_parameters()}))
    (outs_a, grads_a), (outs_b, grads_b) = results
    for a, b in zip(outs_a, outs_b):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_a[name], grads_b[name], atol=1e-4, rtol=1e-4, msg=name)


@pytest.mark.parametrize('with_cp', [False, True])
def test_checkpointing_really_recomputes_the_blocks(with_cp: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """With ``with_cp`` every block goes through torch's checkpoint (``use_reentrant=False``) and
    runs a second time in backward; without it, no block is checkpointed and each runs once."""
    model = build('tiny', with_cp=with_cp).train()
    blocks = [block for stage in model.stages for block in stage.blocks]
    checkpointed, runs = [], []
    real_checkpoint = pvt_module.checkpoint

    def spy(function, *args, **kwargs):
        checkpointed.append((function, kwargs.get('use_reentrant')))
        return real_checkpoint(function, *args, **kwargs)

    monkeypatch.setattr(pvt_module, 'checkpoint', spy)
    for block in blocks:
        block.register_forward_pre_hook(lambda module, args: runs.append(module))
    outs = model(torch.randn(1, 3, 64, 80))
    assert len(runs) == len(blocks) == 8
    sum(o.sum() for o in outs).backward()
    assert checkpointed == ([(block, False) for block in blocks] if with_cp else [])
    runs_per_block = [sum(run is block for run in runs) for block in blocks]
    assert runs_per_block == [2 if with_cp else 1] * len(blocks)


def saved_bytes(model: torch.nn.Module, x: torch.Tensor) -> int:
    """Bytes of the tensors autograd saves for backward during ``model(x)``."""
    sizes = []

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        sizes.append(tensor.numel() * tensor.element_size())
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        model(x)
    return sum(sizes)


def test_checkpointing_keeps_fewer_activations_for_backward() -> None:
    x = torch.randn(1, 3, 64, 80)
    without, with_cp = (saved_bytes(build('tiny', with_cp=cp).train(), x) for cp in (False, True))
    assert 0 < with_cp < without / 4, (with_cp, without)


@pytest.mark.parametrize(('arch', 'drop_path_rate'), [('tiny', 0.1), ('small', 0.3), ('b2_li', 0.2)])
def test_stochastic_depth_grows_linearly_over_all_blocks(arch: str, drop_path_rate: float) -> None:
    model = PVT(arch, drop_path_rate=drop_path_rate)
    depths = ARCH_SETTINGS[arch]['depths']
    assert [len(stage.blocks) for stage in model.stages] == list(depths)
    n = sum(depths)
    expected = [drop_path_rate * i / (n - 1) for i in range(n)]  # linspace(0, drop_path_rate, n)
    rates = [block.drop_path.drop_prob for stage in model.stages for block in stage.blocks]
    assert rates == pytest.approx(expected, abs=1e-7)
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(drop_path_rate)


def test_frozen_stages_out_of_range_is_rejected_before_building(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_building(*args, **kwargs):
        raise AssertionError('a stage was built before frozen_stages was checked')

    monkeypatch.setattr(pvt_module, 'PVTStage', no_building)
    with pytest.raises(ValueError, match=r'frozen_stages must be in \[-1, 4\], got 5'):
        PVT('large', frozen_stages=5)
    with pytest.raises(ValueError, match=r'frozen_stages must be in \[-1, 2\], got 3'):
        PVT(
            None,
            depths=(1, 1),
            embed_dims=(8, 16),
            num_heads=(1, 2),
            mlp_ratios=(1, 1),
            sr_ratios=(2, 1),
            patch_sizes=(4, 2),
            out_indices=(0, 1),
            frozen_stages=3,
        )


#: What ``frozen_stages=0`` freezes, by name: stage 1's patch embedding and (v1) its position embedding.
FROZEN_AT_0 = {
    'tiny': {
        'stages.0.patch_embed.proj.weight',
        'stages.0.patch_embed.proj.bias',
        'stages.0.patch_embed.norm.weight',
        'stages.0.patch_embed.norm.bias',
        'stages.0.pos_embed',
    },
    'b0': {
        'stages.0.patch_embed.proj.weight',
        'stages.0.patch_embed.proj.bias',
        'stages.0.patch_embed.norm.weight',
        'stages.0.patch_embed.norm.bias',
    },
}


@pytest.mark.parametrize(('arch', 'frozen_stages'), [('tiny', 0), ('b0', 0), ('tiny', 1), ('tiny', 2), ('tiny', 4)])
def test_frozen_stages_stay_frozen(arch: str, frozen_stages: int) -> None:
    model = build(arch, frozen_stages=frozen_stages)
    model.train()
    names = [n for n, _ in model.named_parameters()]
    if frozen_stages == 0:
        expected = FROZEN_AT_0[arch]
        frozen_modules = [model.stages[0].patch_embed]
    else:  # whole stages 1..k
        expected = {n for n in names if n.startswith(tuple(f'stages.{i}.' for i in range(frozen_stages)))}
        frozen_modules = list(model.stages[:frozen_stages])
    assert expected <= set(names)
    assert {n for n, p in model.named_parameters() if not p.requires_grad} == expected
    for module in frozen_modules:
        assert not module.training
    assert all(m.training for m in model.stages[max(frozen_stages, 1) :])
    if frozen_stages < 4:
        outs = model(torch.randn(1, 3, 64, 64))
        sum(o.sum() for o in outs).backward()
        without_gradient = {n for n, p in model.named_parameters() if p.grad is None}
        assert without_gradient == expected
    else:
        assert expected == set(names)


def test_out_indices_select_and_order_the_outputs() -> None:
    model = build('tiny', out_indices=(1, 3)).eval()
    assert model.out_channels == (128, 512)
    assert model.out_strides == (8, 32)
    with torch.no_grad():
        outs = model(torch.randn(1, 3, 64, 64))
    assert [o.shape[1] for o in outs] == [128, 512]


def test_explicit_tuples_build_the_same_model_as_the_arch_name() -> None:
    torch.manual_seed(0)
    named = PyramidVisionTransformer.from_arch('small')
    torch.manual_seed(0)
    explicit = PyramidVisionTransformer(
        depths=(3, 4, 6, 3),
        embed_dims=(64, 128, 320, 512),
        num_heads=(1, 2, 5, 8),
        mlp_ratios=(8, 8, 4, 4),
        sr_ratios=(8, 4, 2, 1),
        patch_sizes=(4, 2, 2, 2),
    )
    sd_a, sd_b = named.state_dict(), explicit.state_dict()
    assert sd_a.keys() == sd_b.keys()
    assert all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)


def test_resized_position_embeddings_follow_every_change_of_the_parameter() -> None:
    """Resized on every call (no cache: EMAHook's ``.data.copy_`` swaps bump no version counter, so a
    version-keyed cache went stale); the pretraining size returns the parameter itself."""
    model = build('tiny').eval()
    stage = model.stages[0]
    with torch.no_grad():
        first = stage.resized_pos_embed((10, 12))
        stage.pos_embed.add_(1.0)  # an optimizer step
        updated = stage.resized_pos_embed((10, 12))
        stage.pos_embed.data.copy_(stage.pos_embed.data - 1.0)  # an EMA swap, invisible to _version
        swapped = stage.resized_pos_embed((10, 12))
    torch.testing.assert_close(updated, first + 1.0)
    torch.testing.assert_close(swapped, first)
    tracked = stage.resized_pos_embed((10, 12))
    assert tracked.requires_grad
    assert stage.resized_pos_embed((56, 56)) is stage.pos_embed
