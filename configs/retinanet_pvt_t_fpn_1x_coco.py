# RetinaNet with a PVT-Tiny backbone, COCO 1x (paper: 36.7 box AP).
# 8 GPUs x 2 images, AdamW lr 1e-4; the backbone starts from the official ImageNet weights,
# converted on load (download them into pretrained/, see the README).
_base_ = [
    './_base_/models/retinanet_pvt_t_fpn.py',
    'mmdet::_base_/datasets/coco_detection.py',
    './_base_/schedules/det_adamw_1x.py',
    'mmdet::_base_/default_runtime.py',
]
