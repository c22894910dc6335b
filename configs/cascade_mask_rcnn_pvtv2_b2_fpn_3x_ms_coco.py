# Cascade Mask R-CNN with a PVTv2-b2 backbone, COCO 3x multi-scale (official release: 51.1/44.4
# box/mask AP). As the release's cascade_mask_rcnn_pvt_v2_b2_fpn_3x_mstrain_fp16.py: each of the
# three stages has a 4-conv 1-fc box head with SyncBN and a GIoU box loss (weight 10) on decoded
# boxes; AdamW lr 1e-4, weight decay 0.05, fp16, 36 epochs (steps 27, 33), 8 GPUs x 2 images.
_base_ = [
    'mmdet::_base_/models/cascade-mask-rcnn_r50_fpn.py',
    './_base_/datasets/coco_instance_ms_crop.py',
    './_base_/schedules/det_adamw_3x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['mmpvt'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='PVTv2',
        arch='b2',
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/pvt_v2_b2.pth'),
    ),
    neck=dict(in_channels=[64, 128, 320, 512]),
    roi_head=dict(
        bbox_head=[
            dict(
                type='ConvFCBBoxHead',
                num_shared_convs=4,
                num_shared_fcs=1,
                in_channels=256,
                conv_out_channels=256,
                fc_out_channels=1024,
                roi_feat_size=7,
                num_classes=80,
                bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4, target_stds=stds),
                reg_class_agnostic=False,
                reg_decoded_bbox=True,
                norm_cfg=dict(type='SyncBN', requires_grad=True),
                loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
                loss_bbox=dict(type='GIoULoss', loss_weight=10.0),
            )
            for stds in ([0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [0.033, 0.033, 0.067, 0.067])
        ]
    ),
)
