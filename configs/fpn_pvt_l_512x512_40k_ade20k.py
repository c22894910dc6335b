# The PVT-Tiny config (fpn_pvt_t_512x512_40k_ade20k.py) with a PVT-Large backbone.
_base_ = './fpn_pvt_t_512x512_40k_ade20k.py'

model = dict(backbone=dict(arch='large', init_cfg=dict(checkpoint='pretrained/pvt_large.pth')))
