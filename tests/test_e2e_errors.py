"""The tools fail early with messages that say what to do: bad scope, missing files, missing data."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, TOY_CONFIGS, checkout_env

from mmpvt.launch import ConfigError
from mmpvt.launch import main as launch
from mmpvt.launch.main import train_config, train_parser

RETINANET_TOY = str(TOY_CONFIGS / 'retinanet_pvt_t_fpn_toy_coco.py')
FPN_TOY = str(TOY_CONFIGS / 'fpn_pvt_t_toy_ade.py')


def write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize('scope_line', ['', "default_scope = 'mmpretrain'\n"], ids=['missing', 'unknown'])
def test_unusable_default_scope(tmp_path: Path, scope_line: str) -> None:
    config = write(tmp_path / 'cfg.py', scope_line + 'model = dict(type="X")\n')
    with pytest.raises(ConfigError, match=r'expected default_scope = "mmdet" .* or "mmseg"'):
        train_config(train_parser().parse_args([config]))


def test_missing_checkpoint(tmp_path: Path) -> None:
    args = launch.test_parser().parse_args([RETINANET_TOY, str(tmp_path / 'nope.pth')])
    with pytest.raises(ConfigError, match=r'checkpoint file not found: .*nope\.pth'):
        launch.test_config(args)


def test_missing_resume_checkpoint(tmp_path: Path) -> None:
    args = train_parser().parse_args([RETINANET_TOY, '--resume', str(tmp_path / 'nope.pth')])
    with pytest.raises(ConfigError, match='--resume: checkpoint file not found'):
        train_config(args)


def test_missing_pretrained_backbone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The config's relative ``pretrained/pvt_tiny.pth`` is looked up from the working directory: an empty one here."""
    config = str(REPO / 'configs' / 'retinanet_pvt_t_fpn_1x_coco.py')
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=r'backbone checkpoint pretrained/pvt_tiny\.pth not found.*init_cfg=None'):
        train_config(train_parser().parse_args([config, '--work-dir', str(tmp_path / 'work')]))

    elsewhere = tmp_path / 'weights' / 'pvt_tiny.pth'
    option = f'model.backbone.init_cfg.checkpoint={elsewhere}'
    args = train_parser().parse_args([config, '--work-dir', str(tmp_path / 'work'), '--cfg-options', option])
    with pytest.raises(ConfigError, match=rf'backbone checkpoint {elsewhere} not found'):
        train_config(args)
    # once the file exists the check passes (the next one, the missing COCO, stops the run)
    elsewhere.parent.mkdir()
    elsewhere.write_bytes(b'')
    with pytest.raises(ConfigError, match='not found') as error:
        train_config(args)
    assert 'backbone checkpoint' not in str(error.value) and 'data/coco' in str(error.value)


@pytest.mark.parametrize(
    ('config', 'root', 'reads', 'command'),
    [
        (RETINANET_TOY, 'toy_coco', "ann_file 'annotations/instances_train2017.json'", 'datasets coco {root}'),
        (FPN_TOY, 'toy_ade/ADEChallengeData2016', "data_prefix.img_path 'images/training'", 'datasets ade {parent}'),
    ],
    ids=['coco', 'ade'],
)
def test_missing_toy_dataset_names_what_is_read_and_the_command(
    tmp_path: Path, config: str, root: str, reads: str, command: str
) -> None:
    """A toy data root: what the config reads there, and the command (from an installed package too) that writes it."""
    data_root = tmp_path / root
    options = [f'{loader}.dataset.data_root={data_root}' for loader in ('train_dataloader', 'val_dataloader')]
    args = train_parser().parse_args([config, '--work-dir', str(tmp_path), '--cfg-options', *options])
    with pytest.raises(ConfigError) as error:
        train_config(args)
    message = str(error.value)
    assert f'{data_root} not found' in message
    assert f'the config reads under data_root {str(data_root)!r}: {reads}' in message
    assert 'set train_dataloader.dataset.data_root' in message
    assert 'python -m mmpvt.' + command.format(root=data_root, parent=data_root.parent) in message


def test_missing_own_dataset_gets_no_toy_data_written_into_it(tmp_path: Path) -> None:
    """The user's own folder: the keys to set, no suggestion to write synthetic data there, no COCO 2017 names."""
    data_root = tmp_path / 'my_shapes'
    options = [
        f'train_dataloader.dataset.data_root={data_root}',
        'train_dataloader.dataset.ann_file=labels/train.json',
        'train_dataloader.dataset.data_prefix.img=pictures/',
    ]
    args = train_parser().parse_args([RETINANET_TOY, '--work-dir', str(tmp_path), '--cfg-options', *options])
    with pytest.raises(ConfigError) as error:
        train_config(args)
    message = str(error.value)
    assert f'{data_root} not found' in message
    assert "ann_file 'labels/train.json', data_prefix.img 'pictures/'" in message
    assert 'set train_dataloader.dataset.data_root, ann_file and data_prefix' in message
    assert 'toy' not in message.replace(RETINANET_TOY, '') and 'train2017' not in message


def test_train_tool_exits_with_the_message(tmp_path: Path) -> None:
    config = write(tmp_path / 'cfg.py', 'model = dict(type="X")\n')
    result = subprocess.run(
        [sys.executable, 'tools/train.py', config],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env=checkout_env(),
    )
    assert result.returncode == 1
    assert 'error:' in result.stderr and 'no default_scope' in result.stderr
