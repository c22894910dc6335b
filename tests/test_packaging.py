"""``pip install .`` gives users the configs: the wheel carries them in ``mmpvt/.mim/`` as mmdet does, and a
user's config in another folder inherits one with ``_base_ = 'mmpvt::pvt/<name>.py'``.

What mmengine 0.10.7 allows a third-party package (``mmengine/config/utils.py``): the path after ``::`` must
name a folder (regex ``\\w*::\\w*/\\w*``), hence ``pvt/``; the package must be in mmengine's fixed
``MODULE2PACKAGE`` table, which has no API to extend it: the dict has to be given the entry before the config
is read (``custom_imports`` are imported only after the bases are resolved). The tests build the wheel, install
it into a fresh virtual environment that sees the running environment's packages (torch and the OpenMMLab
stack; ``--no-deps``) and read configs in a subprocess of that environment from a folder outside the checkout.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.relative_to(REPO / 'configs').as_posix() for p in (REPO / 'configs').rglob('*.py'))
COPY_IGNORE = shutil.ignore_patterns(
    '.git', 'work_dirs', 'data', 'build', 'dist', '*.egg-info', '__pycache__', 'gpu_wheels', '.venv', '*.pth'
)


@pytest.fixture(scope='module')
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of a copy of this checkout (the build writes build/ and egg-info into its source tree)."""
    root = tmp_path_factory.mktemp('wheel')
    shutil.copytree(REPO, root / 'src', ignore=COPY_IGNORE)
    command = [sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '--no-index']
    out = subprocess.run([*command, '-q', '-w', str(root / 'dist'), str(root / 'src')], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    (built,) = (root / 'dist').glob('mmpvt-*.whl')
    return built


def see_running_environment(python: Path) -> None:
    """Let the virtual environment of ``python`` see this process's packages, after its own.

    ``venv --system-site-packages`` would show the *base* interpreter's packages: run from inside the
    README's ``.venv``, that is a Python without torch or mmengine. A ``.pth`` file listing this
    environment's site-packages (as ``tools/setup_env.sh`` does for its build environment) shows the
    environment the tests run in, whichever it is; the venv's own site-packages (the wheel) come first.
    """
    code = 'import sysconfig; print(sysconfig.get_paths()["purelib"])'
    purelib = subprocess.run([str(python), '-c', code], capture_output=True, text=True, check=True).stdout.strip()
    ours = dict.fromkeys([*site.getsitepackages(), sysconfig.get_paths()['purelib'], sysconfig.get_paths()['platlib']])
    (Path(purelib) / 'running_environment.pth').write_text(''.join(f'{path}\n' for path in ours))


@pytest.fixture(scope='module')
def venv_python(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    venv = tmp_path_factory.mktemp('venv') / 'venv'
    subprocess.run([sys.executable, '-m', 'venv', str(venv)], check=True)
    python = venv / 'bin' / 'python'
    see_running_environment(python)
    install = [str(python), '-m', 'pip', 'install', '--no-deps', '--no-index', '-q', str(wheel)]
    out = subprocess.run(install, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    return python


def run_in_project(python: Path, project: Path, code: str) -> dict:
    """Run ``code`` with ``python`` in ``project``, without this checkout on the path; its last line is JSON."""
    env = {key: value for key, value in os.environ.items() if key != 'PYTHONPATH'}
    out = subprocess.run(
        [str(python), '-W', 'ignore', '-c', code], cwd=project, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_wheel_carries_every_config_and_the_model_index(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        shipped = sorted(
            name.removeprefix('mmpvt/.mim/configs/pvt/')
            for name in names
            if name.startswith('mmpvt/.mim/configs/pvt/') and name.endswith('.py')
        )
        index = yaml.safe_load(archive.read('mmpvt/.mim/model-index.yml'))
        metafile = yaml.safe_load(archive.read('mmpvt/.mim/metafile.yml'))
    assert shipped == CONFIGS
    assert index == {'Import': ['metafile.yml']}
    listed = [model['Config'] for model in metafile['Models']]
    assert listed and all(f'mmpvt/.mim/{config}' in names for config in listed)
    assert not any(name.startswith('configs/') for name in names)  # no top-level 'configs' package
    tools = sorted(p.relative_to(REPO).as_posix() for p in (REPO / 'tools').rglob('*') if p.suffix in ('.py', '.sh'))
    assert tools and all(f'mmpvt/.mim/{tool}' in names for tool in tools)  # where mim train / mim test look
    assert not any(name.startswith('tools/') for name in names)


@pytest.mark.slow  # installs the wheel into a virtual environment, then runs configs there: 20-30 s
def test_a_user_config_inherits_an_mmpvt_config_from_another_folder(venv_python: Path, tmp_path: Path) -> None:
    """From an unrelated folder: a two-level chain (relative bases inside the package, mmdet:: bases below)."""
    (tmp_path / 'my_retinanet.py').write_text(
        "_base_ = 'mmpvt::pvt/retinanet_pvt_s_fpn_1x_coco.py'\nmodel = dict(bbox_head=dict(num_classes=3))\n"
    )
    (tmp_path / 'my_cascade.py').write_text("_base_ = 'mmpvt::pvt/cascade_mask_rcnn_pvtv2_b2_li_fpn_3x_ms_coco.py'\n")
    code = """
import json, mmengine, mmpvt, torch  # mmpvt adds itself to mmengine's MODULE2PACKAGE
from mmengine.config import Config
retina, cascade = Config.fromfile('my_retinanet.py'), Config.fromfile('my_cascade.py')
print(json.dumps(dict(
    mmpvt=mmpvt.__file__,
    stack=[torch.__file__, mmengine.__file__],
    retina=[retina.model.backbone.arch, retina.model.bbox_head.num_classes, retina.optim_wrapper.optimizer.lr,
            retina.default_scope, retina.custom_imports.imports],
    cascade=[cascade.model.type, cascade.model.backbone.arch, cascade.optim_wrapper.type, cascade.train_cfg.max_epochs],
)))
"""
    result = run_in_project(venv_python, tmp_path, code)
    assert Path(result['mmpvt']).is_relative_to(venv_python.parents[1])  # the installed wheel, not the checkout
    import mmengine

    assert result['stack'] == [torch.__file__, mmengine.__file__]  # the stack of the environment the tests run in
    assert result['retina'] == ['small', 3, 1e-4, 'mmdet', ['mmpvt']]
    assert result['cascade'] == ['CascadeRCNN', 'b2_li', 'AmpOptimWrapper', 36]


@pytest.mark.slow  # installs the wheel into a virtual environment, then runs configs there: 20-30 s
def test_what_mmengine_refuses(venv_python: Path, tmp_path: Path) -> None:
    """mmengine 0.10.7: no ``mmpvt::`` before mmpvt is in MODULE2PACKAGE, and never without a folder."""
    (tmp_path / 'flat.py').write_text("_base_ = 'mmpvt::retinanet_pvt_s_fpn_1x_coco.py'\n")
    (tmp_path / 'folder.py').write_text("_base_ = 'mmpvt::pvt/retinanet_pvt_s_fpn_1x_coco.py'\n")
    code = """
import json
from mmengine.config import Config
from mmengine.config.utils import MODULE2PACKAGE
errors = {}
def attempt(key, name):
    try:
        Config.fromfile(name)
    except Exception as error:
        errors[key] = f'{type(error).__name__}: {error}'
attempt('not registered', 'folder.py')
MODULE2PACKAGE.setdefault('mmpvt', 'mmpvt')
attempt('no folder', 'flat.py')
attempt('registered, with folder', 'folder.py')
print(json.dumps(errors))
"""
    errors = run_in_project(venv_python, tmp_path, code)
    assert errors['not registered'] == 'AssertionError: mmengine does not support to load mmpvt config.'
    assert 'please specify the package name and relative config path' in errors['no folder']
    assert 'registered, with folder' not in errors


def test_ci_follows_the_readme_in_a_fresh_venv() -> None:
    """CI takes the README's recommended path (``.venv``, activated, ``make check``), so it cannot break unseen."""
    readme, ci = (REPO / 'README.md').read_text(), (REPO / '.ci' / 'run').read_text()
    assert 'python3 -m venv .venv && . .venv/bin/activate' in readme
    commands = [line.strip() for line in ci.splitlines() if line.strip() and not line.lstrip().startswith('#')]
    venv = commands.index('python3 -m venv --clear .venv')
    assert commands.index('. .venv/bin/activate') == venv + 1
    assert commands.index('make check') > venv + 1


#: A user's config beside their data: the installed package's toy RetinaNet, made small.
MIM_CONFIG = """
_base_ = 'mmpvt::pvt/toy/retinanet_pvt_t_fpn_toy_coco.py'
data_root = 'data/toy_coco/'
loader = dict(num_workers=0, persistent_workers=False)
train_dataloader = dict(batch_size=4, **loader, dataset=dict(data_root=data_root))
val_dataloader = dict(batch_size=4, **loader, dataset=dict(data_root=data_root))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator
model = dict(backbone=dict(depths=(1, 1, 1, 1)), neck=dict(out_channels=32),
             bbox_head=dict(in_channels=32, feat_channels=32, stacked_convs=1))
train_cfg = dict(max_epochs=1, val_begin=100)
"""


@pytest.mark.slow  # installs openmim (from the package index) into the venv, trains one epoch of 8 images: ~2 min
def test_mim_trains_and_tests_with_the_installed_tools(venv_python: Path, tmp_path: Path) -> None:
    """``mim train mmpvt CONFIG`` and ``mim test`` run the wheel's ``.mim/tools/train.py`` and ``test.py``."""
    install = [str(venv_python), '-m', 'pip', 'install', '-q', 'openmim']
    installed = subprocess.run(install, capture_output=True, text=True, timeout=600)
    if installed.returncode != 0:
        pytest.skip(f'openmim could not be installed from the package index: {installed.stderr[-500:]}')
    mim = venv_python.parent / 'mim'
    env = {key: value for key, value in os.environ.items() if key != 'PYTHONPATH'}
    env['OMP_NUM_THREADS'] = '1'
    run = dict(cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    data = subprocess.run([str(venv_python), '-m', 'mmpvt.datasets', 'coco', 'data/toy_coco', '--num-train', '8',
                           '--num-val', '4', '--size', '64'], **run)  # fmt: skip
    assert data.returncode == 0, data.stderr[-2000:]
    (tmp_path / 'mine.py').write_text(MIM_CONFIG)
    trained = subprocess.run([str(mim), 'train', 'mmpvt', 'mine.py', '--work-dir', 'work'], **run)
    assert trained.returncode == 0, trained.stdout[-2000:] + trained.stderr[-3000:]
    assert '.mim/tools/train.py' in trained.stdout  # mim prints the command it runs
    assert (tmp_path / 'work' / 'epoch_1.pth').is_file()
    tested = subprocess.run(
        [str(mim), 'test', 'mmpvt', 'mine.py', '--checkpoint', 'work/epoch_1.pth', '--work-dir', 'test'], **run
    )
    assert tested.returncode == 0, tested.stdout[-2000:] + tested.stderr[-3000:]
    assert '.mim/tools/test.py' in tested.stdout and 'Epoch(test) [1/1]' in tested.stdout
