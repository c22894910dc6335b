# The PVT-Tiny config (upernet_pvt_t_512x512_160k_ade20k.py) with a PVT-Large backbone.
_base_ = './upernet_pvt_t_512x512_160k_ade20k.py'

model = dict(backbone=dict(arch='large', init_cfg=dict(checkpoint='pretrained/pvt_large.pth')))
