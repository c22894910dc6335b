"""mmpvt's model registry, and how mmdet's and mmseg's registries find mmpvt's models.

mmdet's and mmseg's ``MODELS`` are children of mmengine's root ``MODELS``: a name they do not
hold themselves (``type='PVT'``) is looked up in the root. mmpvt therefore registers its
classes twice, without importing either library:

* in its own ``MODELS`` (scope ``mmpvt``), for ``type='mmpvt.PVT'`` in any OpenMMLab config;
* in mmengine's root ``MODELS``, for ``type='PVT'`` in an unmodified mmdet or mmseg config
  after ``custom_imports = dict(imports=['mmpvt'])``.

A library's own names come before the root's in its lookups, so mmpvt never shadows a
built-in model (mmdet's ``PyramidVisionTransformer`` stays mmdet's); registering a name the
root already holds raises mmengine's ``KeyError`` instead of replacing it.
"""

from __future__ import annotations

from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='mmpvt', locations=['mmpvt.models.backbone'])


def register_model(cls: type) -> type:
    """Class decorator: register ``cls`` under its class name in mmengine's root ``MODELS`` and in mmpvt's.

    Raises:
        KeyError: from mmengine, if either registry already holds a class of that name.
    """
    MMENGINE_MODELS.register_module(module=cls)
    MODELS.register_module(module=cls)
    return cls
