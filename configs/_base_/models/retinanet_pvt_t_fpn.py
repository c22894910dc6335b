# mmdet's RetinaNet with a PVT-Tiny backbone that starts from the official ImageNet weights, converted
# on load (download them into pretrained/, see the README). Shared by the COCO and the toy configs.
_base_ = 'mmdet::_base_/models/retinanet_r50_fpn.py'
custom_imports = dict(imports=['mmpvt'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='PVT',
        arch='tiny',
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/pvt_tiny.pth'),
    ),
    neck=dict(in_channels=[64, 128, 320, 512]),
)
