# RetinaNet-PVT-T on the toy COCO (four shape classes), from scratch, sized for a CPU: batch 8, AdamW
# 5e-4 with cosine decay over 4 epochs (the `make demo` run; tools/analysis/learning_run.py trains it
# longer). Write the data first: python tools/dataset_converters/make_toy_data.py coco data/toy_coco
_base_ = [
    '../_base_/models/retinanet_pvt_t_fpn.py',
    '../_base_/datasets/toy_coco_detection.py',
    '../_base_/schedules/toy_det_4e.py',
]

model = dict(backbone=dict(init_cfg=None), bbox_head=dict(num_classes=4))
