# ATSS with a PVTv2-b2 backbone, COCO 3x multi-scale (official release: 49.9 box AP). As the release's
# atss_pvt_v2_b2_fpn_3x_mstrain_fp16.py: the ATSS model of mmdet's atss_r50_fpn_1x_coco.py (FPN from
# stage 2 with extra convs on its outputs, GIoU loss), AdamW lr 1e-4, weight decay 0.05, fp16,
# 36 epochs (steps 27, 33), 8 GPUs x 2 images. mmdet has no model-only ATSS base file, and its ATSS
# config would clash with the data and schedule bases, so the model is written out here, as there.
_base_ = [
    './_base_/datasets/coco_detection_ms_crop.py',
    './_base_/schedules/det_adamw_3x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmpvt'], allow_failed_imports=False)

model = dict(
    type='ATSS',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_size_divisor=32,
    ),
    backbone=dict(
        type='PVTv2',
        arch='b2',
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/pvt_v2_b2.pth'),
    ),
    neck=dict(
        type='FPN',
        in_channels=[64, 128, 320, 512],
        out_channels=256,
        start_level=1,
        add_extra_convs='on_output',
        num_outs=5,
    ),
    bbox_head=dict(
        type='ATSSHead',
        num_classes=80,
        in_channels=256,
        stacked_convs=4,
        feat_channels=256,
        anchor_generator=dict(
            type='AnchorGenerator', ratios=[1.0], octave_base_scale=8, scales_per_octave=1, strides=[8, 16, 32, 64, 128]
        ),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4, target_stds=[0.1, 0.1, 0.2, 0.2]),
        loss_cls=dict(type='FocalLoss', use_sigmoid=True, gamma=2.0, alpha=0.25, loss_weight=1.0),
        loss_bbox=dict(type='GIoULoss', loss_weight=2.0),
        loss_centerness=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
    ),
    train_cfg=dict(assigner=dict(type='ATSSAssigner', topk=9), allowed_border=-1, pos_weight=-1, debug=False),
    test_cfg=dict(
        nms_pre=1000, min_bbox_size=0, score_thr=0.05, nms=dict(type='nms', iou_threshold=0.6), max_per_img=100
    ),
)
