# Mask2Former with a PVTv2-b2 backbone, ADE20K 512x512, 160k iterations. No published result: neither
# the PVT releases nor mmseg trained this pair. mmseg's mask2former_swin-t_8xb2-160k_ade20k-512x512.py
# with PVTv2-b2 in place of Swin-T: AdamW lr 1e-4, weight decay 0.05, backbone lr x0.1, no weight
# decay on norms (backbone's too) and on the query and level embeddings, gradient clipping at norm
# 0.01, poly 0.9 over 160k iterations, fp32, 8 GPUs x 2 images of 512x512 crops.
_base_ = 'mmseg::mask2former/mask2former_swin-t_8xb2-160k_ade20k-512x512.py'
custom_imports = dict(imports=['mmpvt'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='PVTv2',
        arch='b2',
        init_cfg=dict(type='Pretrained', checkpoint='pretrained/pvt_v2_b2.pth'),
    ),
    decode_head=dict(in_channels=[64, 128, 320, 512]),
)
# The Swin config's keys name Swin's norms; these name PVTv2's (the longest matching key wins, so
# each backbone norm needs a key longer than 'backbone' to get decay 0 and keep lr x0.1; PVTv2-b2
# has at most 6 blocks a stage).
backbone_norm = dict(lr_mult=0.1, decay_mult=0.0)
embed = dict(lr_mult=1.0, decay_mult=0.0)
optim_wrapper = dict(
    paramwise_cfg=dict(
        _delete_=True,
        norm_decay_mult=0.0,
        custom_keys={
            'backbone': dict(lr_mult=0.1, decay_mult=1.0),
            **{f'backbone.stages.{i}.patch_embed.norm': backbone_norm for i in range(4)},
            **{
                f'backbone.stages.{i}.blocks.{j}.{norm}': backbone_norm
                for i in range(4)
                for j in range(6)
                for norm in ('norm', 'attn.norm')
            },
            **{f'backbone.stages.{i}.norm': backbone_norm for i in range(4)},
            'query_embed': embed,
            'query_feat': embed,
            'level_embed': embed,
        },
    )
)
