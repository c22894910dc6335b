# UPerNet with a PVT-Tiny backbone, ADE20K 512x512, 160k iterations (no official PVT result;
# the recipe of mmseg's Swin and Twins UPerNet configs). 8 GPUs x 2 images, AdamW lr 6e-5.
# The backbone starts from the official ImageNet weights, converted on load (download them
# into pretrained/, see the README).
_base_ = [
    'mmseg::_base_/models/upernet_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    './_base_/schedules/upernet_adamw_160k.py',
]
custom_imports = dict(imports=['mmpvt'], allow_failed_imports=False)

crop_size = (512, 512)
model = dict(
    data_preprocessor=dict(size=crop_size, test_cfg=dict(size_divisor=32)),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='PVT',
        arch='tiny',
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/pvt_tiny.pth'),
    ),
    decode_head=dict(in_channels=[64, 128, 320, 512], num_classes=150),
    auxiliary_head=dict(in_channels=320, num_classes=150),
)
train_dataloader = dict(batch_size=2)
