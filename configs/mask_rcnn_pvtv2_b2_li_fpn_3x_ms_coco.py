# Mask R-CNN with a PVTv2-b2_li backbone, COCO 3x multi-scale (no published result: the release
# ships the config, mask_rcnn_pvt_v2_b2_li_fpn_3x_mstrain.py, but reports no number for it).
# The recipe of mask_rcnn_pvtv2_b2_fpn_3x_ms_coco.py, with fp16 (AmpOptimWrapper) as that file has.
_base_ = './mask_rcnn_pvtv2_b2_fpn_3x_ms_coco.py'

model = dict(backbone=dict(arch='b2_li', init_cfg=dict(checkpoint='pretrained/pvt_v2_b2_li.pth')))
optim_wrapper = dict(type='AmpOptimWrapper')
