"""PVT models: the plain core (:mod:`.pvt`) and the registered OpenMMLab backbones (:mod:`.backbone`)."""

from .backbone import PVT, PVTv2
from .pvt import ARCH_SETTINGS, PyramidVisionTransformer, arch_kwargs

__all__ = ['ARCH_SETTINGS', 'PVT', 'PVTv2', 'PyramidVisionTransformer', 'arch_kwargs']
