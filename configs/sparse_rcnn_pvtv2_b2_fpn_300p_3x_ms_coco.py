# Sparse R-CNN with a PVTv2-b2 backbone, 300 proposals, COCO 3x with crop and 480-800 multi-scale
# augmentation (official release: 50.1 box AP). mmdet's sparse-rcnn_r50_fpn_300-proposals_crop-
# ms-480-800-3x_coco.py (the model, data and 36-epoch schedule of the release's config) with the
# release's optimizer: AdamW lr 2.5e-5 / 1.4, weight decay 1e-4, gradient clipping at norm 1,
# fp32, 8 GPUs x 1 image (sparse_rcnn_pvt_v2_b2_fpn_300_proposals_crop_mstrain_480-800_3x_coco.py).
_base_ = 'mmdet::sparse_rcnn/sparse-rcnn_r50_fpn_300-proposals_crop-ms-480-800-3x_coco.py'
custom_imports = dict(imports=['mmpvt'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='PVTv2',
        arch='b2',
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/pvt_v2_b2.pth'),
    ),
    neck=dict(in_channels=[64, 128, 320, 512]),
)
train_dataloader = dict(batch_size=1)
optim_wrapper = dict(optimizer=dict(lr=2.5e-5 / 1.4, weight_decay=1e-4), clip_grad=dict(max_norm=1, norm_type=2))
auto_scale_lr = dict(enable=False, base_batch_size=8)
