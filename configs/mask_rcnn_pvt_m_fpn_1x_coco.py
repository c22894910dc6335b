# The PVT-Tiny config (mask_rcnn_pvt_t_fpn_1x_coco.py) with a PVT-Medium backbone.
_base_ = './mask_rcnn_pvt_t_fpn_1x_coco.py'

# drop_path_rate 0.0: the official detection backbone pvt_medium (whai362/PVT detection/pvt.py)
# does not set it and gets the class default 0.0; tiny, small and every v2 use 0.1 (docs/recipes.md).
model = dict(backbone=dict(arch='medium', drop_path_rate=0.0, init_cfg=dict(checkpoint='pretrained/pvt_medium.pth')))
