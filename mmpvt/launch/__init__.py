"""The code of ``tools/train.py`` and ``tools/test.py``: one small module per concern.

* :mod:`.entry`: ``run_tool``, every tool's ``error:`` line and exit status 1.
* :mod:`.args`: the command lines (mmdet's flags); :mod:`.cfg_options`: ``--cfg-options`` values with ``dict(...)``.
* :mod:`.config_checks`: reading a config and refusing what would fail late or silently
  (``--cfg-options`` typos, neck channels, a missing pretrained file, ``--amp`` on the wrong device).
* :mod:`.data_checks`: the data files (folders, images, label maps) before the first iteration;
  :mod:`.coco_checks`: COCO annotation files; :mod:`.class_checks`: class names against the annotation file and
  the heads' ``num_classes`` against the data; :mod:`.label_checks`: label maps' sizes and values.
* :mod:`.checkpoints`: whether a checkpoint file reads and fits the model (``load_from`` included).
* :mod:`.resume`: which checkpoint ``--resume`` continues from, and never overwriting another run.
* :mod:`.distributed`: the process group before the Runner, CPU (gloo) runs, rank-0 verdicts.
* :mod:`.main`: ``train()`` and ``test()``, the entry points.

What a config can name instead (hooks, the atomic file backend, the CPU optim wrapper) is in
:mod:`mmpvt.engine`, so that it also works under mmdet's and mmseg's own tools.
"""


class ConfigError(ValueError):
    """A config or a file it names is not usable; the message says how to fix it."""
