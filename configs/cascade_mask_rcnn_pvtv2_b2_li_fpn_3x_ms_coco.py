# Cascade Mask R-CNN with a PVTv2-b2_li backbone, COCO 3x multi-scale (official release: 50.9/44.0
# box/mask AP). The recipe of cascade_mask_rcnn_pvtv2_b2_fpn_3x_ms_coco.py.
_base_ = './cascade_mask_rcnn_pvtv2_b2_fpn_3x_ms_coco.py'

model = dict(backbone=dict(arch='b2_li', init_cfg=dict(checkpoint='pretrained/pvt_v2_b2_li.pth')))
