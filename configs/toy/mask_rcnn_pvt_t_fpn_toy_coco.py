# Mask R-CNN-PVT-T on the toy COCO (four shape classes, polygon masks), from scratch, sized for a CPU:
# batch 8, AdamW 5e-4, cosine. Write the data first: python tools/dataset_converters/make_toy_data.py coco
# data/toy_coco
_base_ = [
    '../_base_/models/mask_rcnn_pvt_t_fpn.py',
    '../_base_/datasets/toy_coco_instance.py',
    '../_base_/schedules/toy_det_4e.py',
]

model = dict(
    backbone=dict(init_cfg=None),
    roi_head=dict(bbox_head=dict(num_classes=4), mask_head=dict(num_classes=4)),
)
