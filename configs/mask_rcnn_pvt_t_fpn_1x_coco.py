# Mask R-CNN with a PVT-Tiny backbone, COCO 1x (paper: 36.7 box AP, 35.1 mask AP).
# 8 GPUs x 2 images, AdamW lr 2e-4; the backbone starts from the official ImageNet weights,
# converted on load (download them into pretrained/, see the README).
_base_ = [
    './_base_/models/mask_rcnn_pvt_t_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    './_base_/schedules/det_adamw_1x.py',
    'mmdet::_base_/default_runtime.py',
]

optim_wrapper = dict(optimizer=dict(lr=2e-4))
