"""mmpvt: Pyramid Vision Transformer backbones for OpenMMLab.

The core (:mod:`mmpvt.layers`, :class:`PyramidVisionTransformer`) needs torch alone. Where mmengine is
installed, importing the package (what a config's ``custom_imports = dict(imports=['mmpvt'])`` does) is
also all any OpenMMLab tool needs, ours or mmdet's and mmseg's own ``tools/train.py`` and ``tools/test.py``:

* ``PVT``, ``PVTv2`` and ``SpatialReductionAttention`` are registered in mmpvt's registry and in
  mmengine's root registry, where mmdet's and mmseg's registries find them (:mod:`mmpvt.registry`);
  neither library is imported;
* torch's weights-only unpickler is allowed exactly the types mmengine's checkpoints carry
  (:data:`mmpvt.checkpoint.MMENGINE_SAFE_GLOBALS`), so that mmengine 0.10's plain ``torch.load``
  of a training checkpoint (``test.py``, ``--resume``) works on torch >= 2.6 with safe loading on;
* the hooks, file backend and optim wrapper of :mod:`mmpvt.engine` can be named in a config;
* configs read after ``import mmpvt`` may inherit the installed package's configs with
  ``_base_ = 'mmpvt::pvt/<name>.py'`` (mmengine 0.10 resolves ``pkg::`` only for the packages of its
  ``MODULE2PACKAGE`` table, which has no API to extend it, so mmpvt adds its entry).
"""

import warnings
from importlib.util import find_spec

from .layers import SpatialReductionAttention, sra_macs
from .models import ARCH_SETTINGS, PyramidVisionTransformer
from .models.cpu_inference import optimize_for_cpu_inference
from .version import __version__

__all__ = [
    'ARCH_SETTINGS',
    'PyramidVisionTransformer',
    'SpatialReductionAttention',
    '__version__',
    'optimize_for_cpu_inference',
    'sra_macs',
]

# Here, not beside the backbone's registration: every import of mmpvt (custom_imports, mmengine's
# lazy import of mmpvt.models.backbone for type='mmpvt.PVT', a script's own import) runs this file first.
if find_spec('mmengine') is not None:
    # mmengine 0.10.7 (and mmdet/mmseg through it) import pkg_resources, which warns up to four times per start;
    # setuptools < 82 is kept for exactly that import (tools/setup_env.sh), nothing a user can act on.
    warnings.filterwarnings('ignore', message='pkg_resources is deprecated as an API', category=UserWarning)
    from mmengine.config.utils import MODULE2PACKAGE

    from . import engine  # registers what configs can name
    from .checkpoint import allow_mmengine_checkpoints
    from .models import PVT, PVTv2  # registers the models

    allow_mmengine_checkpoints()
    MODULE2PACKAGE.setdefault('mmpvt', 'mmpvt')
    __all__ += ['PVT', 'PVTv2', 'engine']
