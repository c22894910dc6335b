# Retinanet with a PVTv2-b1 backbone, COCO 1x (PVTv2 paper: 41.2 box AP).
# The PVT recipe of retinanet_pvt_t_fpn_1x_coco.py with the v2 backbone; the official ImageNet weights
# (pvt_v2_b1.pth) are converted on load.
_base_ = './retinanet_pvt_t_fpn_1x_coco.py'

model = dict(backbone=dict(type='PVTv2', arch='b1', init_cfg=dict(checkpoint='pretrained/pvt_v2_b1.pth')))
