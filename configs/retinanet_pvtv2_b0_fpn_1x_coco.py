# Retinanet with a PVTv2-b0 backbone, COCO 1x (PVTv2 paper: 37.2 box AP).
# The PVT recipe of retinanet_pvt_t_fpn_1x_coco.py with the v2 backbone; the official ImageNet weights
# (pvt_v2_b0.pth) are converted on load.
_base_ = './retinanet_pvt_t_fpn_1x_coco.py'

model = dict(
    backbone=dict(type='PVTv2', arch='b0', init_cfg=dict(checkpoint='pretrained/pvt_v2_b0.pth')),
    neck=dict(in_channels=[32, 64, 160, 256]),
)
