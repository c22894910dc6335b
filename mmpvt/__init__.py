"""mmpvt: Pyramid Vision Transformer backbones for OpenMMLab.

Importing the package registers ``PVT``, ``PVTv2`` and ``SpatialReductionAttention``
in mmpvt's registry and in mmdet's and mmseg's when they are installed.
"""

from .layers import SpatialReductionAttention, sra_macs
from .models import ARCH_SETTINGS, PVT, PVTv2, PyramidVisionTransformer
from .version import __version__

__all__ = [
    'ARCH_SETTINGS',
    'PVT',
    'PVTv2',
    'PyramidVisionTransformer',
    'SpatialReductionAttention',
    '__version__',
    'sra_macs',
]
