"""Data helpers: synthetic COCO / ADE20K datasets (:mod:`.toy`) and dataset-wrapper unwrapping (:mod:`.wrappers`).

Neither needs mmdet or mmseg: :mod:`.toy` writes files with numpy and PIL, :mod:`.wrappers`
walks attributes and keys.
"""

from .toy import make_toy_ade, make_toy_coco
from .wrappers import leaf_datasets

__all__ = ['leaf_datasets', 'make_toy_ade', 'make_toy_coco']
