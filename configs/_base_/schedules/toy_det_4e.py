# The toy detection schedule, sized for a CPU: the 1x recipe's AdamW at lr 5e-4 with gradient clipping,
# a 100-iteration warm-up, cosine decay over 4 epochs validated and saved at the end, batches of 8, on
# mmdet's default runtime, seeded.
_base_ = ['./det_adamw_1x.py', 'mmdet::_base_/default_runtime.py']

max_epochs = 4
optim_wrapper = dict(optimizer=dict(lr=5e-4), clip_grad=dict(max_norm=10.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', eta_min=5e-6, begin=0, end=max_epochs, by_epoch=True, convert_to_iter_based=True),
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=max_epochs))
auto_scale_lr = dict(base_batch_size=8)
randomness = dict(seed=0)
