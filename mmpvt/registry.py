"""mmpvt's model registry, and registration into mmdet's and mmseg's.

``MODELS`` is a child of mmengine's root registry with scope ``mmpvt``, so
``type='mmpvt.PVT'`` resolves from any OpenMMLab registry. The same classes are
also registered, under the same names, in mmdet's and mmseg's ``MODELS`` when those
libraries are installed, so that an unmodified config of either can say
``type='PVT'`` after ``custom_imports = dict(imports=['mmpvt'])``.
"""

from __future__ import annotations

import importlib

from mmengine.registry import MODELS as MMENGINE_MODELS
from mmengine.registry import Registry

MODELS = Registry('model', parent=MMENGINE_MODELS, scope='mmpvt', locations=['mmpvt.models'])

DOWNSTREAM_SCOPES = ('mmdet', 'mmseg')


def register_everywhere(cls: type) -> type:
    """Class decorator: register ``cls`` in mmpvt's registry and in each installed downstream one.

    Raises KeyError (from mmengine) if a downstream library already owns the name: we
    never shadow a built-in model.
    """
    MODELS.register_module(module=cls)
    for scope in DOWNSTREAM_SCOPES:
        try:
            registry = importlib.import_module(f'{scope}.registry').MODELS
        except ImportError:
            continue
        registry.register_module(module=cls)
    return cls
