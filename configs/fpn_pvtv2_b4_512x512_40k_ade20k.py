# Semantic FPN with a PVTv2-b4 backbone, ADE20K 512x512, 40k iterations (PVTv2 paper: 47.9 mIoU).
# The recipe of fpn_pvt_t_512x512_40k_ade20k.py; official ImageNet weights converted on load.
_base_ = './fpn_pvt_t_512x512_40k_ade20k.py'

model = dict(backbone=dict(type='PVTv2', arch='b4', init_cfg=dict(checkpoint='pretrained/pvt_v2_b4.pth')))
