# Mask R-CNN-PVT-T on the toy COCO of tools/dataset_converters/make_toy_data.py (128x128 images,
# four shape classes, polygon masks), from scratch, sized for a CPU: batch 8, AdamW 5e-4, cosine.
# Write the data first: python tools/dataset_converters/make_toy_data.py coco data/toy_coco
_base_ = '../mask_rcnn_pvt_t_fpn_1x_coco.py'

data_root = 'data/toy_coco/'
metainfo = dict(classes=('circle', 'square', 'triangle', 'star'))
image_size = (128, 128)
max_epochs = 4

model = dict(
    backbone=dict(init_cfg=None),
    roi_head=dict(bbox_head=dict(num_classes=4), mask_head=dict(num_classes=4)),
)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    dataset=dict(
        data_root=data_root,
        metainfo=metainfo,
        pipeline=train_pipeline,
        filter_cfg=dict(filter_empty_gt=True, min_size=8),
    ),
)
val_dataloader = dict(
    batch_size=8, num_workers=1, dataset=dict(data_root=data_root, metainfo=metainfo, pipeline=test_pipeline)
)
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

optim_wrapper = dict(optimizer=dict(lr=5e-4), clip_grad=dict(max_norm=10.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', eta_min=5e-6, begin=0, end=max_epochs, by_epoch=True, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=max_epochs))
auto_scale_lr = dict(base_batch_size=8)
randomness = dict(seed=0)
