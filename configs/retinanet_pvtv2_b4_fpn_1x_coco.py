# Retinanet with a PVTv2-b4 backbone, COCO 1x (PVTv2 paper: 46.1 box AP).
# The PVT recipe of retinanet_pvt_t_fpn_1x_coco.py with the v2 backbone; the official ImageNet weights
# (pvt_v2_b4.pth) are converted on load.
_base_ = './retinanet_pvt_t_fpn_1x_coco.py'

model = dict(backbone=dict(type='PVTv2', arch='b4', init_cfg=dict(checkpoint='pretrained/pvt_v2_b4.pth')))

# As in the official release, b4 and b5 train with 1 image per GPU (8 in total) and lr / 1.4.
train_dataloader = dict(batch_size=1)
optim_wrapper = dict(optimizer=dict(lr=1e-4 / 1.4))
auto_scale_lr = dict(base_batch_size=8)
