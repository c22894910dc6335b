# UPerNet with a PVT-Tiny backbone, ADE20K 512x512, 160k iterations (no official PVT result;
# the recipe of mmseg's Swin and Twins UPerNet configs). 8 GPUs x 2 images, AdamW lr 6e-5.
# The backbone starts from the official ImageNet weights, converted on load (download them
# into pretrained/, see the README).
_base_ = [
    './_base_/models/upernet_pvt_t.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    './_base_/schedules/upernet_adamw_160k.py',
]

crop_size = (512, 512)
model = dict(data_preprocessor=dict(size=crop_size))
train_dataloader = dict(batch_size=2)
