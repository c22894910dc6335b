# The PVT-Tiny config (fpn_pvt_t_512x512_40k_ade20k.py) with a PVT-Medium backbone.
_base_ = './fpn_pvt_t_512x512_40k_ade20k.py'

model = dict(backbone=dict(arch='medium', init_cfg=dict(checkpoint='pretrained/pvt_medium.pth')))
