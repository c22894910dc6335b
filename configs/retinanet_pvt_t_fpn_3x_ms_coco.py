# RetinaNet with a PVT-Tiny backbone, COCO 3x with multi-scale training: the PVT paper's "3x + MS"
# RetinaNet setting, which no release ships a config for. The paper's table for it gives PVT-S 42.2
# and PVT-M 43.2; no number for PVT-T was in a source we could read. The 1x recipe of
# retinanet_pvt_t_fpn_1x_coco.py for 36 epochs (lr x0.1 at 27 and 33), training images resized to a
# random shorter side in [640, 800] (longer side <= 1333) as mmdet's RetinaNet R-50 3x multi-scale
# config (retinanet_r50_fpn_ms-640-800-3x_coco.py) does; tests at (1333, 800).
_base_ = './retinanet_pvt_t_fpn_1x_coco.py'

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomResize', scale=[(1333, 640), (1333, 800)], keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
train_cfg = dict(max_epochs=36)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=36, by_epoch=True, milestones=[27, 33], gamma=0.1),
]
