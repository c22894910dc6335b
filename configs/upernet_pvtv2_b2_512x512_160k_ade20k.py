# UPerNet with a PVTv2-b2 backbone, ADE20K 512x512, 160k iterations (no official result; the
# recipe of upernet_pvt_t_512x512_160k_ade20k.py). Official ImageNet weights converted on load.
_base_ = './upernet_pvt_t_512x512_160k_ade20k.py'

model = dict(backbone=dict(type='PVTv2', arch='b2', init_cfg=dict(checkpoint='pretrained/pvt_v2_b2.pth')))
