# RetinaNet with a PVT-Large backbone, COCO 3x multi-scale (no published number was in a source we
# could read). The recipe of retinanet_pvt_t_fpn_3x_ms_coco.py with a PVT-Large backbone and what the
# release's PVT-Large 1x config changes (retinanet_pvt_l_fpn_1x_coco.py): drop_path_rate 0.0, 1 image
# per GPU and lr / 1.4.
_base_ = './retinanet_pvt_t_fpn_3x_ms_coco.py'

model = dict(backbone=dict(arch='large', drop_path_rate=0.0, init_cfg=dict(checkpoint='pretrained/pvt_large.pth')))
train_dataloader = dict(batch_size=1)
optim_wrapper = dict(optimizer=dict(lr=1e-4 / 1.4))
auto_scale_lr = dict(base_batch_size=8)
