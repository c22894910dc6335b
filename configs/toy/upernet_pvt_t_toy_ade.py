# UPerNet-PVT-T on the toy ADE20K (shapes of four classes, ADE20K's 150-class label space), from
# scratch, sized for a CPU: batch 8, the toy schedule with the UPerNet recipe's weight decay 0.01 and
# poly 1.0 after the 50-iteration warm-up, over 1000 iterations.
# Write the data first: python tools/dataset_converters/make_toy_data.py ade data/toy_ade
_base_ = ['../_base_/models/upernet_pvt_t.py', '../_base_/datasets/toy_ade.py', '../_base_/schedules/toy_seg_1k.py']

model = dict(data_preprocessor=dict(size=_base_.crop_size), backbone=dict(init_cfg=None))
optim_wrapper = dict(optimizer=dict(weight_decay=0.01))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', eta_min=0.0, power=1.0, begin=50, end=_base_.max_iters, by_epoch=False),
]
