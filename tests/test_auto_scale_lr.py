"""``--auto-scale-lr``: the lr of every iteration scaled by (total batch) / ``auto_scale_lr.base_batch_size``,
through the train tool's code path (mmpvt.launch.main, mmengine's Runner); a config without
``auto_scale_lr`` is refused before anything is built."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import logged_records, small_config
from mmengine.config import Config

from mmpvt.launch import ConfigError
from mmpvt.launch import main as launch
from mmpvt.launch.main import train_config, train_parser

BASE_BATCH = 8  # the toy RetinaNet's auto_scale_lr.base_batch_size


def logged_lrs(work_dir: Path) -> dict[int, float]:
    return {record['iter']: record['lr'] for record in logged_records(work_dir) if 'lr' in record}


@pytest.mark.slow
@pytest.mark.usefixtures('no_safe_globals')
def test_lr_is_scaled_by_the_total_batch(toy_coco: Path, tmp_path: Path) -> None:
    config = small_config(tmp_path / 'small.py', toy_coco, max_epochs=1)
    with config.open('a') as f:
        f.write('param_scheduler = []\n')  # a constant lr: the config's own
    lr = Config.fromfile(str(config)).optim_wrapper.optimizer.lr
    runs = {'plain': (2, []), 'scaled_2': (2, ['--auto-scale-lr']), 'scaled_4': (4, ['--auto-scale-lr'])}
    for name, (batch, flag) in runs.items():
        options = ['--cfg-options', f'train_dataloader.batch_size={batch}']
        launch.train([str(config), *flag, '--work-dir', str(tmp_path / name), *options])
        logged = logged_lrs(tmp_path / name)
        assert sorted(logged) == list(range(1, 8 // batch + 1))  # 8 images
        expected = lr * batch / BASE_BATCH if flag else lr
        assert all(value == pytest.approx(expected, rel=1e-6) for value in logged.values()), (name, logged)


def test_without_the_flag_the_config_is_left_alone(toy_coco: Path, tmp_path: Path) -> None:
    config = str(small_config(tmp_path / 'small.py', toy_coco))
    cfg = train_config(train_parser().parse_args([config, '--work-dir', str(tmp_path / 'w')]))
    assert cfg.auto_scale_lr == dict(enable=False, base_batch_size=BASE_BATCH)
    cfg = train_config(train_parser().parse_args([config, '--work-dir', str(tmp_path / 'w'), '--auto-scale-lr']))
    assert cfg.auto_scale_lr == dict(enable=True, base_batch_size=BASE_BATCH)


@pytest.mark.parametrize('setting', ['', 'auto_scale_lr = dict(enable=False)\n'], ids=['missing', 'no-base-batch'])
def test_config_without_auto_scale_lr_is_refused(tmp_path: Path, setting: str) -> None:
    config = tmp_path / 'cfg.py'
    lines = [
        "default_scope = 'mmdet'",
        "model = dict(type='RetinaNet')",
        'optim_wrapper = dict(optimizer=dict(lr=0.01))',
    ]
    config.write_text('\n'.join(lines) + '\n' + setting)
    with pytest.raises(ConfigError, match=r'has no auto_scale_lr = dict\(enable=\.\.\., base_batch_size=\.\.\.\)'):
        train_config(train_parser().parse_args([str(config), '--auto-scale-lr']))
