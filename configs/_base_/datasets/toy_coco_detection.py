# The toy COCO of tools/dataset_converters/make_toy_data.py (128x128 images, four shape classes) in
# data/toy_coco/, read through mmdet's COCO detection settings, in batches of 8 for a CPU.
# Write the data first: python tools/dataset_converters/make_toy_data.py coco data/toy_coco
_base_ = 'mmdet::_base_/datasets/coco_detection.py'

data_root = 'data/toy_coco/'
metainfo = dict(classes=('circle', 'square', 'triangle', 'star'))
image_size = (128, 128)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True),
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
