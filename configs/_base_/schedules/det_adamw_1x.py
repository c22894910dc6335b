# PVT detection 1x recipe (RetinaNet and Mask R-CNN): AdamW, weight decay 1e-4 but none on
# norms and position embeddings, lr 1e-4 (Mask R-CNN configs raise it to 2e-4); from mmdet's
# schedule_1x: 12 epochs, lr x0.1 at epochs 8 and 11, 500-iteration linear warm-up, and
# auto_scale_lr for the paper's 8 GPUs x 2 images.
_base_ = 'mmdet::_base_/schedules/schedule_1x.py'

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-4),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.0), 'pos_embed': dict(decay_mult=0.0)}),
)
auto_scale_lr = dict(enable=False, base_batch_size=16)
