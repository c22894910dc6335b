# RetinaNet with a PVT-Medium backbone, COCO 3x multi-scale (PVT paper: 43.2 box AP).
# The recipe of retinanet_pvt_t_fpn_3x_ms_coco.py with a PVT-Medium backbone, whose drop_path_rate
# is 0.0 as in the official detection backbone pvt_medium (see retinanet_pvt_m_fpn_1x_coco.py).
_base_ = './retinanet_pvt_t_fpn_3x_ms_coco.py'

model = dict(backbone=dict(arch='medium', drop_path_rate=0.0, init_cfg=dict(checkpoint='pretrained/pvt_medium.pth')))
