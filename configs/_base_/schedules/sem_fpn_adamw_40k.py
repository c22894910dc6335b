# PVT Semantic FPN recipe: AdamW lr 2e-4, weight decay 1e-4 (none on norms and position
# embeddings), poly decay with power 0.9 over 40k iterations, 8 GPUs x 4 images.
_base_ = 'mmseg::_base_/schedules/schedule_40k.py'

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-4, betas=(0.9, 0.999), weight_decay=1e-4),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.0), 'pos_embed': dict(decay_mult=0.0)}),
)
param_scheduler = [dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=40000, by_epoch=False)]
auto_scale_lr = dict(enable=False, base_batch_size=32)
