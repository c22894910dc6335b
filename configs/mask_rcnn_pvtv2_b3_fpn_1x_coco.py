# Mask R-CNN with a PVTv2-b3 backbone, COCO 1x (PVTv2 paper: 47.0/42.5 box/mask AP).
# The PVT recipe of mask_rcnn_pvt_t_fpn_1x_coco.py with the v2 backbone; the official ImageNet weights
# (pvt_v2_b3.pth) are converted on load.
_base_ = './mask_rcnn_pvt_t_fpn_1x_coco.py'

model = dict(backbone=dict(type='PVTv2', arch='b3', init_cfg=dict(checkpoint='pretrained/pvt_v2_b3.pth')))
