# Mask R-CNN with a PVT-Tiny backbone, COCO 1x (paper: 36.7 box AP, 35.1 mask AP).
# 8 GPUs x 2 images, AdamW lr 2e-4; the backbone starts from the official ImageNet weights,
# converted on load (download them into pretrained/, see the README).
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    './_base_/schedules/det_adamw_1x.py',
    'mmdet::_base_/default_runtime.py',
]
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
optim_wrapper = dict(optimizer=dict(lr=2e-4))
