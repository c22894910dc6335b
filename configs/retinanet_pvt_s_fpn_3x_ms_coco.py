# RetinaNet with a PVT-Small backbone, COCO 3x multi-scale (PVT paper: 42.2 box AP).
# The recipe of retinanet_pvt_t_fpn_3x_ms_coco.py with a PVT-Small backbone.
_base_ = './retinanet_pvt_t_fpn_3x_ms_coco.py'

model = dict(backbone=dict(arch='small', init_cfg=dict(checkpoint='pretrained/pvt_small.pth')))
