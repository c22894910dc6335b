# Semantic FPN-PVT-T on the toy ADE20K of tools/dataset_converters/make_toy_data.py (128x128
# images, shapes of four classes on a "wall" background, ADE20K's 150-class label space), from
# scratch, sized for a CPU: batch 8, AdamW 5e-4, poly 0.9 over 1000 iterations.
# Write the data first: python tools/dataset_converters/make_toy_data.py ade data/toy_ade
_base_ = '../fpn_pvt_t_512x512_40k_ade20k.py'

data_root = 'data/toy_ade/ADEChallengeData2016'
crop_size = (128, 128)
max_iters = 1000

model = dict(data_preprocessor=dict(size=crop_size), backbone=dict(init_cfg=None))

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

optim_wrapper = dict(optimizer=dict(lr=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', eta_min=0.0, power=0.9, begin=50, end=max_iters, by_epoch=False),
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(logger=dict(interval=20), checkpoint=dict(interval=max_iters))
auto_scale_lr = dict(base_batch_size=8)
randomness = dict(seed=0)
