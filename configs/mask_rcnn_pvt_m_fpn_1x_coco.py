# The PVT-Tiny config (mask_rcnn_pvt_t_fpn_1x_coco.py) with a PVT-Medium backbone.
_base_ = './mask_rcnn_pvt_t_fpn_1x_coco.py'

model = dict(backbone=dict(arch='medium', init_cfg=dict(checkpoint='pretrained/pvt_medium.pth')))
