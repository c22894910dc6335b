# The PVT-Tiny config (retinanet_pvt_t_fpn_1x_coco.py) with a PVT-Large backbone.
_base_ = './retinanet_pvt_t_fpn_1x_coco.py'

# drop_path_rate 0.0: the official detection backbone pvt_large (whai362/PVT detection/pvt.py)
# does not set it and gets the class default 0.0; tiny, small and every v2 use 0.1 (docs/recipes.md).
model = dict(backbone=dict(arch='large', drop_path_rate=0.0, init_cfg=dict(checkpoint='pretrained/pvt_large.pth')))

# As in the official release (detection/configs/retinanet_pvt_l_fpn_1x_coco.py), PVT-Large trains
# with 1 image per GPU (8 in total) and lr / 1.4. (mmdet's port keeps 2 images and lr 1e-4 with fp16.)
train_dataloader = dict(batch_size=1)
optim_wrapper = dict(optimizer=dict(lr=1e-4 / 1.4))
auto_scale_lr = dict(base_batch_size=8)
