"""Training and testing tools shared by ``tools/train.py`` and ``tools/test.py``, and toy data.

Importing this package needs mmengine (and mmdet or mmseg for the configs that use them);
``import mmpvt`` alone does not import it.
"""

from .distributed import RankMeanLossHook, prepare_cpu_distributed
from .launch import ConfigError, build_runner, check_data, load_config, test, train, validation_metrics
from .toy_data import make_toy_ade, make_toy_coco

__all__ = [
    'ConfigError',
    'RankMeanLossHook',
    'build_runner',
    'check_data',
    'load_config',
    'make_toy_ade',
    'make_toy_coco',
    'prepare_cpu_distributed',
    'test',
    'train',
    'validation_metrics',
]
