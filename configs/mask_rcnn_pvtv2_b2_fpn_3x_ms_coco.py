# Mask R-CNN with a PVTv2-b2 backbone, COCO 3x with multi-scale and crop augmentation (official
# release: 47.8/43.1 box/mask AP, whai362/PVT detection/README.md). Recipe of the release's
# mask_rcnn_pvt_v2_b2_fpn_3x_mstrain.py: AdamW lr 1e-4, weight decay 0.05, 36 epochs (steps 27, 33),
# 8 GPUs x 2 images, and fp32: unlike its other 3x configs, this one trains without fp16.
_base_ = [
    './_base_/models/mask_rcnn_pvt_t_fpn.py',
    './_base_/datasets/coco_instance_ms_crop.py',
    './_base_/schedules/det_adamw_3x.py',
    'mmdet::_base_/default_runtime.py',
]

model = dict(backbone=dict(type='PVTv2', arch='b2', init_cfg=dict(checkpoint='pretrained/pvt_v2_b2.pth')))
optim_wrapper = dict(type='OptimWrapper')
