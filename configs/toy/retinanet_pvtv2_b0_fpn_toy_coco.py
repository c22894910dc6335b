# The toy RetinaNet (retinanet_pvt_t_fpn_toy_coco.py) with a PVTv2-b0 backbone, from scratch.
_base_ = './retinanet_pvt_t_fpn_toy_coco.py'

model = dict(
    backbone=dict(_delete_=True, type='PVTv2', arch='b0', init_cfg=None),
    neck=dict(in_channels=[32, 64, 160, 256]),
)
