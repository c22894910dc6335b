# Semantic FPN-PVT-T on the toy ADE20K (shapes of four classes, ADE20K's 150-class label space), from
# scratch, sized for a CPU: batch 8, AdamW 5e-4, poly 0.9 over 1000 iterations.
# Write the data first: python tools/dataset_converters/make_toy_data.py ade data/toy_ade
_base_ = ['../_base_/models/fpn_pvt_t.py', '../_base_/datasets/toy_ade.py', '../_base_/schedules/toy_seg_1k.py']

model = dict(data_preprocessor=dict(size=_base_.crop_size), backbone=dict(init_cfg=None))
