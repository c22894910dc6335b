# The PVT-Tiny config (retinanet_pvt_t_fpn_1x_coco.py) with a PVT-Large backbone.
_base_ = './retinanet_pvt_t_fpn_1x_coco.py'

model = dict(backbone=dict(arch='large', init_cfg=dict(checkpoint='pretrained/pvt_large.pth')))
