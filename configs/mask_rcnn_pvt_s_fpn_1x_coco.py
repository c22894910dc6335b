# The PVT-Tiny config (mask_rcnn_pvt_t_fpn_1x_coco.py) with a PVT-Small backbone.
_base_ = './mask_rcnn_pvt_t_fpn_1x_coco.py'

model = dict(backbone=dict(arch='small', init_cfg=dict(checkpoint='pretrained/pvt_small.pth')))
