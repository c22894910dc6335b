# ATSS with a PVTv2-b2_li backbone, COCO 3x multi-scale (official release: 48.9 box AP).
# The recipe of atss_pvtv2_b2_fpn_3x_ms_coco.py.
_base_ = './atss_pvtv2_b2_fpn_3x_ms_coco.py'

model = dict(backbone=dict(arch='b2_li', init_cfg=dict(checkpoint='pretrained/pvt_v2_b2_li.pth')))
