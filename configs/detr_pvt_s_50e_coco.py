# DETR with a PVT-Small backbone, COCO 50 epochs (official release: 34.7 box AP). mmdet's DETR R-50
# model (6 encoder and 6 decoder layers, 100 queries) on PVT-S's last stage (stride 32, 512
# channels, as the release's pvt_small_f4), with the release's detr_pvt_s_8x2_50ep_coco.py recipe:
# shorter side 640..800 (step 32, longer side <= 1333), flip, padding to 32; AdamW lr 1e-4, weight
# decay 1e-4, backbone lr x0.1, gradient clipping at norm 0.1, 50 epochs with lr x0.1 at 33 and no
# warm-up, fp32, 8 GPUs x 2 images.
_base_ = 'mmdet::detr/detr_r50_8xb2-150e_coco.py'
custom_imports = dict(imports=['mmpvt'], allow_failed_imports=False)

model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(
        _delete_=True,
        type='PVT',
        arch='small',
        out_indices=(3,),
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/pvt_small.pth'),
    ),
    neck=dict(in_channels=[512]),
)
train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=None),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='RandomChoiceResize', scales=[(1333, s) for s in range(640, 801, 32)], keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
train_cfg = dict(max_epochs=50)
param_scheduler = [dict(type='MultiStepLR', begin=0, end=50, by_epoch=True, milestones=[33], gamma=0.1)]
