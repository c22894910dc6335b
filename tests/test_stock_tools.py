"""mmdet's and mmseg's own tools/train.py and tools/test.py run our configs.

The tools are the copies shipped in the mmdet and mmsegmentation wheels (``.mim/tools/``), run
unmodified in subprocesses; the only thing that brings mmpvt in is the config's
``custom_imports = dict(imports=['mmpvt'])``. The detector's config adds what a user names to
get mmpvt's extras (custom hooks, the atomic checkpoint backend, the CPU AMP optim wrapper);
``--cfg-options`` shrink the toy configs to a few iterations on 64-pixel images.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO, TINY

from mmpvt import PVTv2

pytestmark = pytest.mark.slow

mmdet = pytest.importorskip('mmdet')
mmseg = pytest.importorskip('mmseg')

TOY = REPO / 'configs' / 'toy'

#: What a user's config adds to one of ours to get mmpvt's extras under any tool.
USER_CONFIG = """
_base_ = '{base}'
custom_hooks = [dict(type='EarlyChecksHook'), dict(type='ResumableRandomnessHook'), dict(type='RankMeanLossHook')]
default_hooks = dict(checkpoint=dict(backend_args=dict(backend='atomic_local')))
optim_wrapper = dict(type='CpuAmpOptimWrapper')
"""


def stock_tool(package: object, name: str) -> Path:
    """``tools/NAME`` as shipped in ``package``'s wheel."""
    path = Path(package.__file__).parent / '.mim' / 'tools' / name
    assert path.is_file(), f'{path} not shipped'
    return path


def run(*args: object, cwd: Path) -> subprocess.CompletedProcess:
    """Run ``python ARGS`` with this checkout's mmpvt first on the path; stdout and stderr merged."""
    existing = os.environ.get('PYTHONPATH', '')
    env = dict(os.environ, PYTHONPATH=str(REPO) + (os.pathsep + existing if existing else ''))
    return subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )


def run_stock(package: object, tool: str, *args: object, options: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``package``'s own ``tools/TOOL`` with ``ARGS`` and ``--cfg-options OPTIONS``."""
    return run(stock_tool(package, tool), *args, '--cfg-options', *options, cwd=cwd)


def detector_test(detector: dict, checkpoint: Path, work_dir: Path) -> subprocess.CompletedProcess:
    """The stock mmdet test.py on ``checkpoint`` with the detector's config and options."""
    config, options = detector['config'], detector['options']
    return run_stock(mmdet, 'test.py', config, checkpoint, '--work-dir', work_dir, options=options, cwd=work_dir.parent)


def succeeded(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 0, result.stdout[-4000:]
    return result.stdout


def failed(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0, result.stdout[-4000:]
    return result.stdout


def detector_options(data_root: Path) -> list[str]:
    """``--cfg-options`` making the toy RetinaNet-PVT-T tiny and pointing it at ``data_root``."""
    root = f'{data_root}/'
    options = [
        'model.backbone.depths=(1,1,1,1)',
        'model.neck.out_channels=32',
        'model.bbox_head.in_channels=32',
        'model.bbox_head.feat_channels=32',
        'model.bbox_head.stacked_convs=1',
        'model.data_preprocessor.pad_size_divisor=32',
        'model.test_cfg.score_thr=0.0',  # an untrained detector scores below 0.05: COCO's mAP needs boxes
        'train_dataloader.batch_size=2',
        'train_dataloader.dataset.indices=4',
        f'train_dataloader.dataset.pipeline.2.scale=({TINY},{TINY})',
        'train_cfg.max_epochs=1',
        'train_cfg.val_interval=1',
        'default_hooks.logger.interval=1',
        'default_hooks.checkpoint.interval=1',
        f'val_evaluator.ann_file={root}annotations/instances_val2017.json',
        f'test_evaluator.ann_file={root}annotations/instances_val2017.json',
    ]
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        options += [f'{loader}.dataset.data_root={root}', f'{loader}.num_workers=0']
        options.append(f'{loader}.persistent_workers=False')
    for loader in ('val_dataloader', 'test_dataloader'):
        options.append(f'{loader}.dataset.pipeline.1.scale=({TINY},{TINY})')
    return options


def coco_metrics(output: str, mode: str) -> list[float]:
    """The last ``Epoch(MODE)`` line's COCO box metrics (bbox_mAP, _50, _75, _s, _m, _l)."""
    lines = [line for line in output.splitlines() if f'Epoch({mode})' in line and 'coco/bbox_mAP:' in line]
    assert lines, output[-4000:]
    values = [float(v) for v in re.findall(r'coco/bbox_mAP\w*: (-?[\d.]+)', lines[-1])]
    assert len(values) == 6 and all(-1 <= v <= 1 for v in values), lines[-1]
    return values


@pytest.fixture(scope='module')
def detector(toy_coco: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The stock mmdet train.py for one epoch, then its --resume for a second one; what they left behind."""
    tmp = tmp_path_factory.mktemp('stock_mmdet')
    config = tmp / 'user_retinanet.py'
    config.write_text(USER_CONFIG.format(base=TOY / 'retinanet_pvt_t_fpn_toy_coco.py'))
    work_dir = tmp / 'work'
    options = detector_options(toy_coco)
    first = succeeded(run_stock(mmdet, 'train.py', config, '--work-dir', work_dir, options=options, cwd=tmp))
    twice = [*options, 'train_cfg.max_epochs=2']
    resumed = succeeded(
        run_stock(mmdet, 'train.py', config, '--work-dir', work_dir, '--resume', options=twice, cwd=tmp)
    )
    return dict(tmp=tmp, config=config, work_dir=work_dir, options=options, first=first, resumed=resumed)


def test_mmdet_train_and_resume_with_our_extras(detector: dict) -> None:
    """Stock train.py trains and saves through atomic_local, with our hooks and CPU AMP; --resume continues."""
    first, resumed, work_dir = detector['first'], detector['resumed'], detector['work_dir']
    for hook in ('EarlyChecksHook', 'ResumableRandomnessHook', 'RankMeanLossHook'):
        assert hook in first, f'{hook} not among the hooks the Runner lists'
    assert 'resumed epoch: 1' in resumed, resumed[-4000:]
    coco_metrics(first, 'val')
    coco_metrics(resumed, 'val')
    checkpoint = torch.load(work_dir / 'epoch_2.pth', weights_only=True)
    assert checkpoint['meta']['epoch'] == 2
    assert any('loss_scaler' in key for key in checkpoint['optimizer']), 'not saved by CpuAmpOptimWrapper'
    assert not list(work_dir.glob('.*.tmp')), 'atomic_local left a temporary file behind'
    assert (work_dir / 'last_checkpoint').read_text().strip().endswith('epoch_2.pth')


def test_mmdet_test_reproduces_the_validation_metrics(detector: dict) -> None:
    """Stock test.py loads the stock train.py's checkpoint (safe loading on) and prints the same box mAP."""
    output = succeeded(detector_test(detector, detector['work_dir'] / 'epoch_2.pth', detector['tmp'] / 'test'))
    assert 'Weights only load failed' not in output
    assert re.search(r'bbox_mAP_copypaste: [\d. -]+', output), output[-4000:]
    assert coco_metrics(output, 'test') == coco_metrics(detector['resumed'], 'val')


class Payload:
    """Unpickling this calls ``Path.touch(marker)``: a stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_mmdet_test_refuses_a_crafted_checkpoint(detector: dict, tmp_path: Path) -> None:
    """Allowing mmengine's types kept torch's safe unpickler on: a pickle with a payload runs nothing."""
    marker, evil = tmp_path / 'PWNED', tmp_path / 'evil.pth'
    state_dict = torch.load(detector['work_dir'] / 'epoch_2.pth', weights_only=True)['state_dict']
    torch.save({'state_dict': state_dict, 'meta': {'note': Payload(marker)}}, evil)
    torch.load(evil, weights_only=False)  # the payload is a real one
    assert marker.exists()
    marker.unlink()
    output = failed(detector_test(detector, evil, tmp_path / 'test'))
    assert 'Weights only load failed' in output, output[-4000:]
    assert not marker.exists()


def test_early_checks_hook_refuses_another_models_checkpoint(detector: dict, tmp_path: Path) -> None:
    """EarlyChecksHook under stock test.py: a PVTv2-b0 detector's checkpoint is refused, not evaluated.

    mmengine alone loads it leniently (a warning per mismatched tensor) and reports a random model's mAP.
    """
    path = tmp_path / 'pvtv2_b0.pth'
    backbone = PVTv2('b0', depths=(1, 1, 1, 1)).state_dict()
    torch.save({'state_dict': {f'backbone.{k}': v for k, v in backbone.items()}}, path)
    output = failed(detector_test(detector, path, tmp_path / 'test'))
    assert re.search(rf'{re.escape(str(path))} is not a checkpoint of this RetinaNet: .*shape mismatches', output), (
        output[-4000:]
    )
    assert 'coco/bbox_mAP' not in output


def segmentor_options(data_root: Path) -> list[str]:
    """``--cfg-options`` making the toy Semantic FPN-PVT-T tiny (2 iterations), with atomic checkpoints."""
    root = data_root / 'ADEChallengeData2016'
    options = [
        'model.backbone.depths=(1,1,1,1)',
        f'model.data_preprocessor.size=({TINY},{TINY})',
        'train_dataloader.batch_size=2',
        'train_cfg.max_iters=2',
        'train_cfg.val_interval=2',
        'default_hooks.logger.interval=1',
        'default_hooks.checkpoint.interval=2',
        'default_hooks.checkpoint.backend_args.backend=atomic_local',
    ]
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        options += [f'{loader}.dataset.data_root={root}', f'{loader}.num_workers=0']
        options.append(f'{loader}.persistent_workers=False')
    return options


def miou(output: str, mode: str) -> float:
    lines = [line for line in output.splitlines() if f'Iter({mode})' in line and 'mIoU:' in line]
    assert lines, output[-4000:]
    value = float(re.search(r'mIoU: ([\d.]+)', lines[-1]).group(1))
    assert 0 <= value <= 100, lines[-1]
    return value


def test_mmseg_train_then_test(toy_ade: Path, tmp_path: Path) -> None:
    """Stock mmseg train.py for 2 iterations (atomic checkpoints), then its test.py: the same mIoU."""
    config, work_dir = TOY / 'fpn_pvt_t_toy_ade.py', tmp_path / 'work'
    options = segmentor_options(toy_ade)
    trained = succeeded(run_stock(mmseg, 'train.py', config, '--work-dir', work_dir, options=options, cwd=tmp_path))
    checkpoint, test_dir = work_dir / 'iter_2.pth', tmp_path / 'test'
    tested = succeeded(
        run_stock(mmseg, 'test.py', config, checkpoint, '--work-dir', test_dir, options=options, cwd=tmp_path)
    )
    assert miou(tested, 'test') == miou(trained, 'val')


def test_import_allows_exactly_mmengines_types(tmp_path: Path) -> None:
    """Reading a config with our custom_imports allows MMENGINE_SAFE_GLOBALS, nothing else of ours.

    (Importing ``torch.distributed.tensor``, as mmengine's runner does, makes torch allow its DTensor types.)
    """
    probe = (
        'import torch\n'
        'from mmengine.config import Config\n'
        'before = set(torch.serialization.get_safe_globals())\n'
        f'Config.fromfile({str(TOY / "retinanet_pvt_t_fpn_toy_coco.py")!r})\n'
        'from mmpvt.checkpoint import MMENGINE_SAFE_GLOBALS\n'
        'ours = set(MMENGINE_SAFE_GLOBALS)\n'
        'added = set(torch.serialization.get_safe_globals()) - before\n'
        'assert not before & ours and ours <= added, (before & ours, ours - added)\n'
        "others = {item for item in added - ours if not item.__module__.startswith('torch.')}\n"
        'assert not others, others\n'
    )
    succeeded(run('-c', probe, cwd=tmp_path))


def test_atomic_local_names_our_backend() -> None:
    """The backend a config names as 'atomic_local' is mmpvt's atomic one (import mmpvt registered it)."""
    from mmengine.fileio import get_file_backend

    from mmpvt.engine import AtomicLocalBackend

    assert isinstance(get_file_backend('work_dirs', backend_args=dict(backend='atomic_local')), AtomicLocalBackend)
