# The PVT-Tiny config (upernet_pvt_t_512x512_160k_ade20k.py) with a PVT-Medium backbone.
_base_ = './upernet_pvt_t_512x512_160k_ade20k.py'

model = dict(backbone=dict(arch='medium', init_cfg=dict(checkpoint='pretrained/pvt_medium.pth')))
