# The toy ADE20K of tools/dataset_converters/make_toy_data.py (128x128 images, shapes of four classes
# on a "wall" background, ADE20K's 150-class label space) in data/toy_ade/, read through mmseg's ADE20K
# settings at full size (no resize or crop), in batches of 8 for a CPU.
# Write the data first: python tools/dataset_converters/make_toy_data.py ade data/toy_ade
_base_ = 'mmseg::_base_/datasets/ade20k.py'

data_root = 'data/toy_ade/ADEChallengeData2016'
crop_size = (128, 128)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(batch_size=8, num_workers=1, dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(batch_size=8, num_workers=1, dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
