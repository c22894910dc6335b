# GFL with a PVTv2-b2 backbone, COCO 3x multi-scale (official release: 50.2 box AP). The release's
# gfl_pvt_v2_b2_fpn_3x_mstrain_fp16.py differs from its ATSS config only in the head: mmdet's GFL
# head (quality focal loss, distribution focal loss, reg_max 16); same data, schedule and fp16.
_base_ = './atss_pvtv2_b2_fpn_3x_ms_coco.py'

model = dict(
    type='GFL',
    bbox_head=dict(
        _delete_=True,
        type='GFLHead',
        num_classes=80,
        in_channels=256,
        stacked_convs=4,
        feat_channels=256,
        anchor_generator=dict(
            type='AnchorGenerator', ratios=[1.0], octave_base_scale=8, scales_per_octave=1, strides=[8, 16, 32, 64, 128]
        ),
        loss_cls=dict(type='QualityFocalLoss', use_sigmoid=True, beta=2.0, loss_weight=1.0),
        loss_dfl=dict(type='DistributionFocalLoss', loss_weight=0.25),
        reg_max=16,
        loss_bbox=dict(type='GIoULoss', loss_weight=2.0),
    ),
)
