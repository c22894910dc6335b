# Sparse R-CNN with a PVTv2-b2_li backbone, 300 proposals, COCO 3x crop and multi-scale (official
# release: 48.9 box AP). The recipe of sparse_rcnn_pvtv2_b2_fpn_300p_3x_ms_coco.py.
_base_ = './sparse_rcnn_pvtv2_b2_fpn_300p_3x_ms_coco.py'

model = dict(backbone=dict(arch='b2_li', init_cfg=dict(checkpoint='pretrained/pvt_v2_b2_li.pth')))
