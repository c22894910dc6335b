# The toy COCO of toy_coco_detection.py with its polygon masks: the annotations are loaded with masks
# and evaluated on boxes and masks, as mmdet's coco_instance.py does to its coco_detection.py.
_base_ = './toy_coco_detection.py'

train_pipeline = [dict(t, with_mask=True) if t.type == 'LoadAnnotations' else t for t in _base_.train_pipeline]
test_pipeline = [dict(t, with_mask=True) if t.type == 'LoadAnnotations' else t for t in _base_.test_pipeline]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = test_dataloader = dict(dataset=dict(pipeline=test_pipeline))
val_evaluator = test_evaluator = dict(metric=['bbox', 'segm'])
