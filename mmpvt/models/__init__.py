"""PVT models: the plain core (:mod:`.pvt`) and the registered OpenMMLab backbones (:mod:`.backbone`).

The core needs torch alone; the backbones need mmengine and are imported only where it is installed.
"""

from importlib.util import find_spec

from .pvt import ARCH_SETTINGS, PyramidVisionTransformer, arch_kwargs

__all__ = ['ARCH_SETTINGS', 'PyramidVisionTransformer', 'arch_kwargs']

if find_spec('mmengine') is not None:
    from .backbone import PVT, PVTv2

    __all__ += ['PVT', 'PVTv2']
