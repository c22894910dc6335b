# The toy segmentation schedule, sized for a CPU: the Semantic FPN recipe's AdamW at lr 5e-4, a
# 50-iteration warm-up, poly 0.9 decay over 1000 iterations validated and saved at the end, batches of
# 8, on mmseg's default runtime, seeded.
_base_ = ['./sem_fpn_adamw_40k.py', 'mmseg::_base_/default_runtime.py']

max_iters = 1000
optim_wrapper = dict(optimizer=dict(lr=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', eta_min=0.0, power=0.9, begin=50, end=max_iters, by_epoch=False),
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(logger=dict(interval=20), checkpoint=dict(interval=max_iters))
auto_scale_lr = dict(base_batch_size=8)
randomness = dict(seed=0)
