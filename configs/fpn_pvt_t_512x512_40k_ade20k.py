# Semantic FPN with a PVT-Tiny backbone, ADE20K 512x512, 40k iterations (paper: 35.7 mIoU).
# 8 GPUs x 4 images, AdamW lr 2e-4, poly 0.9. Test images keep mmseg's resize to a short side
# of 512 and are padded to sides divisible by 32. The backbone starts from the official
# ImageNet weights, converted on load (download them into pretrained/, see the README).
_base_ = [
    './_base_/models/fpn_pvt_t.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    './_base_/schedules/sem_fpn_adamw_40k.py',
]

crop_size = (512, 512)
model = dict(data_preprocessor=dict(size=crop_size))
