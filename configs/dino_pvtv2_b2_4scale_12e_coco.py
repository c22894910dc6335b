# DINO (4 scales) with a PVTv2-b2 backbone, COCO 12 epochs. No published result: neither the PVT
# release nor mmdet trained this pair. mmdet's dino-4scale_r50_8xb2-12e_coco.py as it is (900
# queries, denoising queries, AdamW lr 1e-4, weight decay 1e-4, backbone lr x0.1, gradient clipping
# at norm 0.1, 12 epochs with lr x0.1 at 11, fp32, 8 GPUs x 2 images), fed by PVTv2-b2's stages
# 2-4 (strides 8, 16, 32; mmdet's ChannelMapper adds the stride-64 level) instead of ResNet-50's.
_base_ = 'mmdet::dino/dino-4scale_r50_8xb2-12e_coco.py'
custom_imports = dict(imports=['mmpvt'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='PVTv2',
        arch='b2',
        out_indices=(1, 2, 3),
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/pvt_v2_b2.pth'),
    ),
    neck=dict(in_channels=[128, 320, 512]),
)
