"""Building blocks of PVT; plain ``torch.nn`` modules."""

from .attention import SpatialReductionAttention, sra_macs
from .drop_path import DropPath
from .mlp import Mlp
from .patch_embed import PatchEmbed

__all__ = ['DropPath', 'Mlp', 'PatchEmbed', 'SpatialReductionAttention', 'sra_macs']
