# Mask R-CNN with a PVTv2-b5 backbone, COCO 1x (PVTv2 paper: 47.4/42.5 box/mask AP).
# The recipe of mask_rcnn_pvtv2_b4_fpn_1x_coco.py (1 image per GPU, lr / 1.4) with the b5 backbone;
# the official ImageNet weights (pvt_v2_b5.pth) are converted on load.
_base_ = './mask_rcnn_pvtv2_b4_fpn_1x_coco.py'

model = dict(backbone=dict(arch='b5', init_cfg=dict(checkpoint='pretrained/pvt_v2_b5.pth')))
