# mmseg's Semantic FPN with a PVT-Tiny backbone that starts from the official ImageNet weights,
# converted on load (download them into pretrained/, see the README), for ADE20K's 150 classes. Test
# images are padded to sides divisible by 32. Shared by the ADE20K and the toy configs.
_base_ = 'mmseg::_base_/models/fpn_r50.py'
custom_imports = dict(imports=['mmpvt'], allow_failed_imports=False)

model = dict(
    data_preprocessor=dict(test_cfg=dict(size_divisor=32)),
    pretrained=None,
    backbone=dict(
        _delete_=True,
        type='PVT',
        arch='tiny',
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/pvt_tiny.pth'),
    ),
    neck=dict(in_channels=[64, 128, 320, 512]),
    decode_head=dict(num_classes=150),
)
