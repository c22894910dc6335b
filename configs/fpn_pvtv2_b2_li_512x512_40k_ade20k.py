# Semantic FPN with a PVTv2-b2_li backbone, ADE20K 512x512, 40k iterations (no published result:
# whai362/PVTv2-Seg ships the config, fpn_pvtv2_b2_li_ade20k_40k.py, without a number). Its recipe is
# that of fpn_pvt_t_512x512_40k_ade20k.py; official ImageNet weights converted on load.
_base_ = './fpn_pvt_t_512x512_40k_ade20k.py'

model = dict(backbone=dict(type='PVTv2', arch='b2_li', init_cfg=dict(checkpoint='pretrained/pvt_v2_b2_li.pth')))
