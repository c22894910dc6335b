"""Bad input a training or test run meets, through the real tools' code path (mmpvt.launch.main).

Images: missing, corrupt, grey, RGBA, smaller than the network's stride; an empty annotation list;
config mistakes (unknown arch, neck channels, typo'd ``--cfg-options``); checkpoints of another model.
Each is either handled (grey and RGBA images are converted to 3 channels, small images resized or
padded) or stopped before the first iteration with a message that says what is wrong.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import REPO, TOY_CONFIGS, logged_records, small_config
from mmcv.transforms import LoadImageFromFile
from mmdet.registry import MODELS
from mmdet.structures import DetDataSample
from mmdet.utils import register_all_modules
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.registry import HOOKS
from PIL import Image

from mmpvt.launch import ConfigError
from mmpvt.launch import main as launch
from mmpvt.launch.main import train_config, train_parser

pytestmark = pytest.mark.slow

TRAIN_JSON = 'annotations/instances_train2017.json'
RETINANET_TOY = str(TOY_CONFIGS / 'retinanet_pvt_t_fpn_toy_coco.py')


@pytest.fixture
def coco(toy_coco: Path, tmp_path: Path) -> Path:
    """A private copy of the toy COCO that a test may damage."""
    return Path(shutil.copytree(toy_coco, tmp_path / 'coco'))


def train_images(root: Path) -> tuple[dict, list[Path]]:
    content = json.loads((root / TRAIN_JSON).read_text())
    return content, [root / 'train2017' / image['file_name'] for image in content['images']]


def train(root: Path, work_dir: Path, max_epochs: int = 1, *extra: str) -> dict[str, float]:
    config = small_config(work_dir.parent / f'{work_dir.name}.py', root, max_epochs=max_epochs)
    return launch.train([str(config), '--work-dir', str(work_dir), *extra])


def logged_losses(work_dir: Path) -> list[float]:
    return [record['loss'] for record in logged_records(work_dir) if 'loss' in record]


#: The small config without its Resize, one image per batch: each image reaches the model at its own size.
UNRESIZED = """
_base_ = '{base}'
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(batch_size=1, dataset=dict(pipeline=train_pipeline))
custom_hooks = [dict(type='RecordInputSizesHook')]
"""

#: (H, W) of every image a training step got, and of the backbone's input in that step (RecordInputSizesHook).
SIZES: list[tuple[tuple[int, int], tuple[int, int]]] = []


@HOOKS.register_module(force=True)
class RecordInputSizesHook(Hook):
    """Appends (image size, backbone input size) to SIZES for every training step."""

    def before_train(self, runner) -> None:
        self.backbone_inputs: list[tuple[int, int]] = []
        runner.model.backbone.register_forward_pre_hook(lambda _, args: self.backbone_inputs.append(args[0].shape[2:]))

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        (image,) = data_batch['inputs']
        SIZES.append((tuple(image.shape[1:]), tuple(self.backbone_inputs[-1])))


def test_grey_rgba_and_tiny_images_train(coco: Path, tmp_path: Path) -> None:
    """A grey JPEG, an RGBA PNG and a 16×16 image (below the total stride 32) train like the others.

    No Resize: the 16×16 image reaches the model as it is, and the detector's data preprocessor pads it to the
    32×32 the backbone needs.
    """
    content, paths = train_images(coco)
    Image.open(paths[0]).convert('L').save(paths[0])
    rgba = paths[1].with_suffix('.png')
    Image.open(paths[1]).convert('RGBA').save(rgba)
    paths[1].unlink()
    content['images'][1]['file_name'] = rgba.name
    tiny, scale = content['images'][2], 16 / content['images'][2]['width']
    Image.open(paths[2]).resize((16, 16)).save(paths[2])
    tiny.update(width=16, height=16)
    for ann in content['annotations']:
        if ann['image_id'] == tiny['id']:
            ann['bbox'] = [v * scale for v in ann['bbox']]
            ann['area'] *= scale**2
            ann['segmentation'] = [[v * scale for v in poly] for poly in ann['segmentation']]
    (coco / TRAIN_JSON).write_text(json.dumps(content))

    for path in (paths[0], rgba):  # converted to 3-channel BGR on load
        assert LoadImageFromFile()(dict(img_path=str(path)))['img'].shape == (64, 64, 3)

    small = small_config(tmp_path / 'small.py', coco, max_epochs=1)
    config = tmp_path / 'unresized.py'
    config.write_text(UNRESIZED.format(base=small))
    SIZES.clear()
    launch.train([str(config), '--work-dir', str(tmp_path / 'work')])
    losses = logged_losses(tmp_path / 'work')
    assert len(losses) == 8 and all(math.isfinite(loss) for loss in losses)
    assert len(SIZES) == 8 and ((16, 16), (32, 32)) in SIZES
    assert all(backbone == (64, 64) for image, backbone in SIZES if image != (16, 16))


def test_image_below_the_stride_is_padded(tmp_path: Path) -> None:
    """Without a Resize, the detector's data preprocessor pads a 16×16 image to 32×32 and predicts."""
    register_all_modules()
    model = MODELS.build(Config.fromfile(RETINANET_TOY).model).eval()
    sample = DetDataSample(metainfo=dict(img_shape=(16, 16), ori_shape=(16, 16), scale_factor=(1.0, 1.0)))
    data = dict(inputs=[torch.randint(0, 256, (3, 16, 16), dtype=torch.uint8)], data_samples=[sample])
    assert model.data_preprocessor(data)['inputs'].shape == (1, 3, 32, 32)
    with torch.no_grad():
        (result,) = model.test_step(data)
    assert result.pred_instances.bboxes.shape[1] == 4


def test_missing_image_stops_before_training(coco: Path, tmp_path: Path) -> None:
    _, paths = train_images(coco)
    paths[3].unlink()
    with pytest.raises(ConfigError) as error:
        train(coco, tmp_path / 'work')
    message = str(error.value)
    assert f'1 file(s) of the training set do not exist: {paths[3]}' in message
    assert 'instances_train2017.json must exist' in message
    assert not logged_losses(tmp_path / 'work')  # not a single iteration ran


def test_corrupt_image_names_the_file(coco: Path, tmp_path: Path) -> None:
    _, paths = train_images(coco)
    paths[3].write_bytes(np.random.default_rng(0).integers(0, 256, 2000, dtype=np.uint8).tobytes())
    with pytest.raises(ConfigError, match=rf'cannot decode image {paths[3]}: the file is corrupt or not an image'):
        train(coco, tmp_path / 'work')


def test_empty_annotation_list(coco: Path, tmp_path: Path) -> None:
    content, _ = train_images(coco)
    content['annotations'] = []
    (coco / TRAIN_JSON).write_text(json.dumps(content))
    with pytest.raises(ConfigError, match=r'the training dataset is empty: .*instances_train2017\.json'):
        train(coco, tmp_path / 'work')


@pytest.mark.parametrize(
    ('options', 'message'),
    [
        (['model.backbone.arch=huge'], r"model.backbone: unknown PVT arch 'huge'; valid archs: tiny, small"),
        (
            ['model.neck.in_channels=[64,128,256,512]'],
            r'model.neck.in_channels=\[64, 128, 256, 512\] but the PVT backbone .* outputs \[64, 128, 320, 512\]',
        ),
        (['train_dataloader.batch_sze=4'], r"train_dataloader has no 'batch_sze'; did you mean 'batch_size'"),
        (['model.backbon.arch=small'], r"model has no 'backbon'; did you mean 'backbone'\?"),
        (['randomness.seeed=1'], r"randomness has no 'seeed'; did you mean 'seed'\?"),
    ],
    ids=['arch', 'neck', 'typo-leaf', 'typo-path', 'typo-dict'],
)
def test_config_mistakes(options: list[str], message: str) -> None:
    args = train_parser().parse_args([RETINANET_TOY, '--cfg-options', *options])
    with pytest.raises(ConfigError, match=message):
        train_config(args)


def test_wrong_models_checkpoint_in_test_tool(toy_coco: Path, tmp_path: Path) -> None:
    """tools/test.py with a ResNet's checkpoint, or a segmentor's, is refused, not run on random weights."""
    config = small_config(tmp_path / 'small.py', toy_coco)
    resnet = tmp_path / 'resnet.pth'
    torch.save({'state_dict': {'conv1.weight': torch.zeros(64, 3, 7, 7), 'fc.weight': torch.zeros(10, 2048)}}, resnet)
    with pytest.raises(ConfigError, match=r'resnet\.pth is not a checkpoint of this RetinaNet: it provides 0 of'):
        launch.test([str(config), str(resnet), '--work-dir', str(tmp_path / 'w')])

    deeper = tmp_path / 'pvt_small_retinanet.pth'  # the right model family, another PVT variant
    model_cfg = Config.fromfile(str(REPO / 'configs' / 'retinanet_pvt_s_fpn_1x_coco.py')).model
    model_cfg.backbone.init_cfg = None
    torch.save({'state_dict': MODELS.build(model_cfg).state_dict()}, deeper)
    with pytest.raises(ConfigError, match=r'is not a checkpoint of this RetinaNet'):
        launch.test([str(config), str(deeper), '--work-dir', str(tmp_path / 'w2')])
