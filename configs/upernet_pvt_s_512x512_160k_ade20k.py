# The PVT-Tiny config (upernet_pvt_t_512x512_160k_ade20k.py) with a PVT-Small backbone.
_base_ = './upernet_pvt_t_512x512_160k_ade20k.py'

model = dict(backbone=dict(arch='small', init_cfg=dict(checkpoint='pretrained/pvt_small.pth')))
