# COCO boxes and masks with the augmentation of coco_detection_ms_crop.py (official PVTv2 3x configs): its
# annotations are loaded with masks and evaluated on boxes and masks, as mmdet's coco_instance.py does to
# its coco_detection.py.
_base_ = './coco_detection_ms_crop.py'


def with_masks(pipeline: list) -> list:
    """The transforms of ``pipeline``, the annotations loaded with masks."""
    return [dict(t, with_mask=True) if t.type == 'LoadAnnotations' else t for t in pipeline]


train_pipeline = with_masks(_base_.train_pipeline)
test_pipeline = with_masks(_base_.test_pipeline)
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
# The loaders' own pipeline: read from an mmdet:: base as ``test_pipeline``, the transforms would carry a
# ``_scope_`` key that mmdet's coco_instance.py loaders do not have.
val_dataloader = test_dataloader = dict(dataset=dict(pipeline=with_masks(_base_.val_dataloader.dataset.pipeline)))
val_evaluator = test_evaluator = dict(metric=['bbox', 'segm'])
