# PVTv2 detection 3x recipe of the official release (whai362/PVT detection/configs/*_3x_mstrain*.py):
# AdamW lr 1e-4, weight decay 0.05 (none on norms and position embeddings), fp16 (AmpOptimWrapper;
# the release used apex), 36 epochs with lr x0.1 at 27 and 33, the 500-iteration linear warm-up of
# mmdet's schedule_1x, 8 GPUs x 2 images.
_base_ = 'mmdet::_base_/schedules/schedule_1x.py'

train_cfg = dict(max_epochs=36)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=36, by_epoch=True, milestones=[27, 33], gamma=0.1),
]
optim_wrapper = dict(
    _delete_=True,
    type='AmpOptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.0), 'pos_embed': dict(decay_mult=0.0)}),
)
auto_scale_lr = dict(enable=False, base_batch_size=16)
