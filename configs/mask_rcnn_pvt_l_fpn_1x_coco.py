# The PVT-Tiny config (mask_rcnn_pvt_t_fpn_1x_coco.py) with a PVT-Large backbone.
_base_ = './mask_rcnn_pvt_t_fpn_1x_coco.py'

model = dict(backbone=dict(arch='large', init_cfg=dict(checkpoint='pretrained/pvt_large.pth')))

# As in the paper, PVT-Large trains with 1 image per GPU (8 in total) and lr / 1.4.
train_dataloader = dict(batch_size=1)
optim_wrapper = dict(optimizer=dict(lr=2e-4 / 1.4))
auto_scale_lr = dict(base_batch_size=8)
