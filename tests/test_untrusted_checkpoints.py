"""A .pth is a pickle: no load path of mmpvt may run code hidden in one.

Each test writes a checkpoint whose unpickling would create a marker file, feeds it to
one of our load paths, and checks that the load is refused with a clear error and that
the marker never appears. A checkpoint shaped like mmengine's (HistoryBuffer and numpy
scalars in ``meta``) still loads: the allow-list is exactly what mmengine needs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO, TINY, checkout_env
from mmengine.logging import HistoryBuffer

from mmpvt import PVT
from mmpvt.checkpoint import load_file

# each test starts without the process-wide allow-list other tests leave behind, and leaves none behind
pytestmark = pytest.mark.usefixtures('no_safe_globals')


class Payload:
    """Unpickling this calls ``Path.touch(marker)``: a stand-in for arbitrary code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def write_malicious(path: Path, marker: Path) -> Path:
    state_dict = PVT('tiny', depths=(1, 1, 1, 1)).state_dict()
    torch.save({'state_dict': state_dict, 'meta': {'note': Payload(marker)}}, path)
    # Sanity: a plain unpickler would run it (done in a child process, then cleaned up).
    probe = f'import torch; torch.load({str(path)!r}, weights_only=False)'
    subprocess.run(
        [sys.executable, '-c', probe], check=True, capture_output=True, cwd=Path(__file__).parent, env=checkout_env()
    )
    assert marker.exists(), 'the payload is not a real one'
    marker.unlink()
    return path


@pytest.fixture
def evil(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / 'PWNED'
    return write_malicious(tmp_path / 'evil.pth', marker), marker


def test_load_file_refuses(evil: tuple[Path, Path]) -> None:
    path, marker = evil
    with pytest.raises(ValueError, match=r'refusing to load .*evil\.pth.*allow-list'):
        load_file(path)
    assert not marker.exists()


def test_pretrained_init_refuses(evil: tuple[Path, Path]) -> None:
    path, marker = evil
    model = PVT('tiny', depths=(1, 1, 1, 1), init_cfg=dict(type='Pretrained', checkpoint=str(path)))
    with pytest.raises(ValueError, match='refusing to load'):
        model.init_weights()
    assert not marker.exists()


def test_mmengine_shaped_checkpoint_still_loads(tmp_path: Path) -> None:
    buffer = HistoryBuffer()
    buffer.update(1.5)
    meta = {'epoch': np.int64(3), 'seed': np.float64(0.5), 'hist': buffer, 'arr': np.arange(3), 'dtype': np.dtype('f4')}
    path = tmp_path / 'mmengine_like.pth'
    torch.save({'state_dict': {'w': torch.ones(2)}, 'meta': meta, 'message_hub': {'log_scalars': {'a': buffer}}}, path)
    loaded = load_file(path)
    assert loaded['meta']['epoch'] == 3 and loaded['meta']['hist'].current() == 1.5


class SneakyGetattr:
    """Pickles as ``getattr(HistoryBuffer, 'update')``: getattr is allowed only for the statistics methods."""

    def __reduce__(self):
        return (getattr, (HistoryBuffer, 'update'))


def test_getattr_is_restricted_to_history_buffer_statistics(tmp_path: Path) -> None:
    path = tmp_path / 'sneaky.pth'
    torch.save({'meta': SneakyGetattr()}, path)
    with pytest.raises(ValueError, match=r"refusing getattr\(.*HistoryBuffer.*'update'\)"):
        load_file(path)


def run_tool(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=cwd, timeout=600, env=checkout_env()
    )


def test_converter_refuses(evil: tuple[Path, Path], tmp_path: Path) -> None:
    path, marker = evil
    result = run_tool(
        str(REPO / 'tools' / 'model_converters' / 'pvt2mmpvt.py'), str(path), str(tmp_path / 'out.pth'), cwd=tmp_path
    )
    assert result.returncode != 0
    assert 'refusing to load' in result.stderr
    assert not marker.exists() and not (tmp_path / 'out.pth').exists()


def toy_config_file(tmp_path: Path, data_root: Path) -> Path:
    """The toy RetinaNet config pointed at ``data_root``, as a file the tools can read."""
    cfg = tmp_path / 'toy.py'
    cfg.write_text(
        f'_base_ = {str(REPO / "configs" / "toy" / "retinanet_pvt_t_fpn_toy_coco.py")!r}\n'
        f'data_root = {str(data_root) + "/"!r}\n'
        'train_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root))\n'
        'val_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(data_root=data_root))\n'
        'test_dataloader = val_dataloader\n'
        "val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')\n"
        'test_evaluator = val_evaluator\n'
        f'model = dict(backbone=dict(depths=(1, 1, 1, 1)), data_preprocessor=dict(pad_size_divisor=32))\n'
    )
    return cfg


def test_test_tool_and_resume_refuse(evil: tuple[Path, Path], tmp_path: Path, toy_coco: Path) -> None:
    path, marker = evil
    cfg = toy_config_file(tmp_path, toy_coco)
    test = run_tool(
        str(REPO / 'tools' / 'test.py'), str(cfg), str(path), '--work-dir', str(tmp_path / 'w1'), cwd=tmp_path
    )
    assert test.returncode != 0
    assert 'Weights only load failed' in test.stderr or 'refusing to load' in test.stderr, test.stderr[-2000:]
    assert not marker.exists()
    train = run_tool(
        str(REPO / 'tools' / 'train.py'),
        str(cfg),
        '--resume',
        str(path),
        '--work-dir',
        str(tmp_path / 'w2'),
        cwd=tmp_path,
    )
    assert train.returncode != 0
    assert 'Weights only load failed' in train.stderr or 'refusing to load' in train.stderr, train.stderr[-2000:]
    assert not marker.exists()
    assert TINY == 64  # the toy data of conftest: 64-pixel images
