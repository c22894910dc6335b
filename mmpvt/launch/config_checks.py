"""Reading a config, and the checks that turn its silent mistakes into errors naming what is wrong.

* :func:`load_config`: a config that mmengine cannot read names the file and line
  (:func:`explain_config_error`); an unknown ``default_scope`` or a missing library is refused.
* :func:`check_cfg_options`: mmengine's ``--cfg-options`` adds any key it is given, so
  a typo (``train_cfg.max_epoch=2``) would be silently ignored. A key that is a near
  miss of an existing one is refused with the closest names; new keys are accepted.
* :func:`check_neck_channels`: the neck's (or decode head's) ``in_channels`` must be
  the PVT's output channels, else the model fails deep in a convolution.
* :func:`check_pretrained`: the backbone's ``Pretrained`` file exists.
* :func:`check_amp_device`, :func:`amp_optim_wrapper`: ``--amp`` picks the optim wrapper of the device.
* :func:`amp_inference`: ``tools/test.py --amp`` picks the inference precision of the device.
"""

from __future__ import annotations

import ast
import difflib
import importlib
import inspect
import os.path as osp
from collections.abc import Mapping
from typing import Any

import torch
from mmengine.config import Config
from mmengine.logging import print_log
from mmengine.runner import Runner

from ..models import PVT, PVTv2, PyramidVisionTransformer
from ..models.cpu_features import choose_cpu_dtype
from ..models.pvt import arch_kwargs
from . import ConfigError

#: Supported ``default_scope`` values and the package each one needs.
SCOPES = {'mmdet': 'mmdet', 'mmseg': 'mmsegmentation'}


def load_config(path: str, cfg_options: dict[str, Any] | None = None) -> Config:
    """Read a config, apply ``--cfg-options`` and check its ``default_scope``.

    Args:
        path: config file.
        cfg_options: overrides in mmengine's ``key=value`` form (already parsed).

    Returns:
        The config.

    Raises:
        ConfigError: missing file, missing or unsupported ``default_scope``, or the
            library of that scope is not installed.
    """
    if not osp.isfile(path):
        raise ConfigError(f'config file not found: {path}')
    try:
        cfg = Config.fromfile(path)
    except Exception as err:  # a syntax error, a missing _base_, any error the config's code raises
        raise explain_config_error(path, err) from err
    if cfg_options:
        check_cfg_options(cfg, cfg_options)
        cfg.merge_from_dict(cfg_options)
    check_neck_channels(cfg)
    scope = cfg.get('default_scope')
    if scope not in SCOPES:
        found = 'no default_scope' if scope is None else f'default_scope={scope!r}'
        raise ConfigError(
            f'{path} has {found}; expected default_scope = "mmdet" (detection) or "mmseg" '
            f'(segmentation), normally inherited from an mmdet:: or mmseg:: base config'
        )
    try:
        importlib.import_module(scope)
    except ImportError as err:
        raise ConfigError(
            f'{path} is an {scope} config but {scope} is not installed: pip install {SCOPES[scope]}'
        ) from err
    return cfg


def explain_config_error(path: str, err: Exception) -> ConfigError:
    """A message for a config (or one of its ``_base_`` files) that mmengine could not read.

    mmengine's SyntaxError names ``<unknown>`` for the file: the file is found by parsing
    ``path`` and the local ``_base_`` files it names, in order.
    """
    if isinstance(err, SyntaxError):
        culprit = _syntax_error_in(path) or err
        name = path if culprit.filename in (None, '<unknown>') else culprit.filename
        return ConfigError(
            f'{name}, line {culprit.lineno}: {culprit.msg}: {(culprit.text or "").strip()!r}; expected a Python '
            'config file (fix the line, or the one before it)'
        )
    if isinstance(err, FileNotFoundError) and err.filename:
        return ConfigError(
            f'{path}: file not found: {osp.normpath(err.filename)} (a _base_ or a file the config reads)'
        )
    return ConfigError(f'cannot read config {path}: {type(err).__name__}: {err}')


def _syntax_error_in(path: str, seen: frozenset[str] = frozenset()) -> SyntaxError | None:
    """The SyntaxError of ``path`` or of a local ``_base_`` file it names (recursively), with its file name."""
    if path in seen or not osp.isfile(path):
        return None
    with open(path, encoding='utf-8') as f:
        text = f.read()
    try:
        tree = ast.parse(text, filename=path)
    except SyntaxError as err:
        return err
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, 'id', None) == '_base_' for t in node.targets):
            try:
                bases = ast.literal_eval(node.value)
            except ValueError:
                return None
            for base in [bases] if isinstance(bases, str) else bases:
                if '::' not in base:
                    found = _syntax_error_in(osp.normpath(osp.join(osp.dirname(path), base)), seen | {path})
                    if found:
                        return found
    return None


#: Top-level keys the Runner (or mmdet's and mmseg's tools) read besides the config's own.
RUNNER_KEYS = frozenset(inspect.signature(Runner.__init__).parameters) | {
    'find_unused_parameters',
    'auto_scale_lr',
    'runner_type',
    'custom_imports',
    'default_scope',
}


#: How alike (difflib's ratio) a new key and an existing one must be for the new one to count as a typo:
#: ``max_epoch``/``max_epochs`` 0.95, ``seeed``/``seed`` 0.89; ``drop_path_rate``/``drop_rate`` 0.78 is a new key.
TYPO_CUTOFF = 0.8


def _suggest(name: str, options: Any) -> str:
    close = difflib.get_close_matches(name, [str(o) for o in options], n=3, cutoff=TYPO_CUTOFF)
    return f'; did you mean {" or ".join(repr(c) for c in close)}?' if close else ''


def _child(node: Any, part: str) -> tuple[bool, Any]:
    """(found, value) of ``node[part]`` for a dict key or a list index."""
    if isinstance(node, Mapping):
        return (part in node, node.get(part))
    if isinstance(node, list | tuple) and part.lstrip('-').isdigit() and -len(node) <= int(part) < len(node):
        return True, node[int(part)]
    return False, None


def check_cfg_option(cfg: Config, key: str) -> None:
    """Refuse a ``--cfg-options`` key that is likely a typo of an existing one.

    mmengine adds keys it is given, and users rely on it (``train_dataloader.dataset.metainfo.classes``
    in mmdet's custom-dataset guide): a new key is accepted. A key whose first missing part is a
    near miss of a name that exists at that place (``max_epoch`` beside ``max_epochs``) would be
    a new, unused setting beside the one meant; it is refused with "did you mean". So is an index
    past the end of a list, or a path through a value that is not a dict or list.

    Raises:
        ConfigError: naming the missing part of the path, where it was looked up and the closest names.
    """
    parts = key.split('.')
    node: Any = cfg._cfg_dict if isinstance(cfg, Config) else cfg
    for depth, part in enumerate(parts):
        found, child = _child(node, part)
        if found:
            node = child
            continue
        where = '.'.join(parts[:depth]) or 'the config'
        if isinstance(node, list | tuple):
            raise ConfigError(
                f'--cfg-options {key}: {where} is a list of {len(node)}; expected an index from 0 to {len(node) - 1}, '
                f'got {part!r}'
            )
        if not isinstance(node, Mapping):
            raise ConfigError(
                f'--cfg-options {key}: {where} is {node!r} ({type(node).__name__}), not a dict: it has no {part!r}'
            )
        if depth == 0 and part in RUNNER_KEYS:
            return
        close = _suggest(part, list(node))
        if close:
            raise ConfigError(
                f'--cfg-options {key}: {where} has no {part!r}{close} (a new key {part!r} would be added beside '
                'it and probably never read)'
            )
        return  # a new key: mmengine adds it, as mmdet's and mmseg's tools do


def check_cfg_options(cfg: Config, cfg_options: Mapping[str, Any] | None) -> None:
    """:func:`check_cfg_option` for every key of parsed ``--cfg-options``."""
    for key in cfg_options or {}:
        check_cfg_option(cfg, key)


def pvt_out_channels(backbone: Mapping[str, Any]) -> tuple[int, ...] | None:
    """Channels a ``PVT``/``PVTv2`` backbone config will output, or None for another backbone."""
    classes = {'PVT': PVT, 'PVTv2': PVTv2}
    cls = classes.get(str(backbone.get('type', '')).rsplit('.', 1)[-1])
    if cls is None:
        return None
    arch = backbone.get('arch', inspect.signature(cls).parameters['arch'].default)
    embed_dims = arch_kwargs(arch, **{k: backbone[k] for k in ('embed_dims',) if k in backbone})['embed_dims']
    default = inspect.signature(PyramidVisionTransformer).parameters['out_indices'].default
    return tuple(embed_dims[i] for i in backbone.get('out_indices', default))


def check_neck_channels(cfg: Config) -> None:
    """Check that the module after a PVT backbone expects the PVT's output channels.

    That module is ``model.neck`` (mmdet's FPN, mmseg's FPN neck) or, without a neck,
    ``model.decode_head`` (mmseg's UPerNet).

    Raises:
        ConfigError: with both channel lists, or naming what is wrong with the backbone's settings.
    """
    model = cfg.get('model') or {}
    try:
        channels = pvt_out_channels(model.get('backbone') or {})
    except ValueError as err:  # unknown arch, per-stage tuples of different lengths
        raise ConfigError(f'model.backbone: {err}') from err
    if channels is None:
        return
    for name in ('neck', 'decode_head'):
        module = model.get(name)
        if not isinstance(module, Mapping) or 'in_channels' not in module:
            continue
        expected = module['in_channels']
        expected = list(expected) if isinstance(expected, list | tuple) else expected
        if expected != list(channels):
            raise ConfigError(
                f'model.{name}.in_channels={expected} but the {model.backbone.type} backbone '
                f'(arch {model.backbone.get("arch")!r}) outputs {list(channels)} channels: '
                f'set model.{name}.in_channels={list(channels)}'
            )
        return


def check_pretrained(cfg: Config) -> None:
    """Check that the backbone's ``Pretrained`` checkpoint file exists (URLs are not checked)."""
    init_cfg = cfg.model.get('backbone', {}).get('init_cfg')
    for item in init_cfg if isinstance(init_cfg, list) else [init_cfg] if init_cfg else []:
        path = item.get('checkpoint')
        if item.get('type') == 'Pretrained' and path and '://' not in path and not osp.isfile(path):
            name = osp.basename(path)
            raise ConfigError(
                f'backbone checkpoint {path} not found (model.backbone.init_cfg.checkpoint, relative to the working '
                f'directory). Download the official ImageNet weights into it (README, "Pretrained weights": '
                f'https://github.com/whai362/PVT/releases/download/v2/{name}), set '
                'model.backbone.init_cfg.checkpoint=PATH, or train from scratch with --cfg-options '
                'model.backbone.init_cfg=None'
            )


def check_amp_device(optim_wrapper: dict[str, Any]) -> None:
    """Refuse the CPU mixed-precision wrapper in a config run on a machine with CUDA.

    A config dumped by a CPU ``--amp`` run names ``CpuAmpOptimWrapper``; on a GPU its CPU
    loss scaler and bfloat16 autocast are wrong, and the Runner would put the model on the GPU.

    Raises:
        ConfigError: naming the wrapper to use instead.
    """
    if str(optim_wrapper.get('type', '')).rsplit('.', 1)[-1] == 'CpuAmpOptimWrapper' and torch.cuda.is_available():
        raise ConfigError(
            "optim_wrapper type='CpuAmpOptimWrapper' is the CPU-only bfloat16 wrapper (a config dumped by a CPU "
            "--amp run?), but CUDA is available: set optim_wrapper.type='AmpOptimWrapper' (float16), or train "
            'with --amp, which picks it on a GPU'
        )


def amp_optim_wrapper(optim_wrapper: dict[str, Any], dtype: str | None = None) -> None:
    """Turn the config's ``optim_wrapper`` into a mixed-precision one, in place.

    CUDA: mmengine's ``AmpOptimWrapper`` (``dtype``, float16 by default; dynamic loss scale).
    CPU: :class:`CpuAmpOptimWrapper` (bfloat16, dynamic loss scale) where the CPU has a bf16
    matrix unit (AMX) or ``dtype='bfloat16'`` asks for it; elsewhere the wrapper is left as it
    is, since bf16 would train slower than fp32 there (:func:`~mmpvt.models.cpu_features.choose_cpu_dtype`).
    The choice and its reason are logged.

    Args:
        optim_wrapper: the config's ``optim_wrapper``.
        dtype: ``'float16'``, ``'bfloat16'`` or None (the device's default).

    Raises:
        ConfigError: float16 asked for on a machine without CUDA.
    """
    if not torch.cuda.is_available():
        if dtype == 'float16':
            raise ConfigError(
                '--amp-dtype float16 needs a GPU: mixed precision on the CPU runs bfloat16 '
                '(use --amp, or --amp-dtype bfloat16)'
            )
        choice = choose_cpu_dtype(dtype or 'auto')
        print_log(f'--amp on the CPU: training runs in {choice}', logger='current', level=choice.log_level)
        if choice.dtype == torch.float32:
            return  # no bf16 matrix unit: bf16 would be slower; --amp-dtype bfloat16 forces it
        optim_wrapper['type'] = 'CpuAmpOptimWrapper'
    else:
        optim_wrapper['type'] = 'AmpOptimWrapper'
        if dtype:
            optim_wrapper['dtype'] = dtype
    optim_wrapper['loss_scale'] = 'dynamic'


def amp_inference(cfg: Config) -> None:
    """``tools/test.py --amp``: mixed-precision inference for the device, in place.

    CUDA: mmengine's test loop under float16 autocast (``test_cfg.fp16``). CPU: the PVT
    backbone in bf16 where the CPU has a bf16 matrix unit, fp32 elsewhere
    (``CpuFastPathsHook(dtype='auto')``, which logs the choice); with bf16 the neck and the
    heads run under bf16 autocast and hand fp32 to box decoding, NMS and resizing
    (:func:`~mmpvt.engine.hooks.cpu_fast_paths.autocast_heads`).
    """
    if torch.cuda.is_available():
        cfg.test_cfg = dict(cfg.get('test_cfg') or dict(type='TestLoop'), fp16=True)
        return
    hooks = cfg.get('custom_hooks') or []
    others = [hook for hook in hooks if str(hook.get('type', '')).rsplit('.', 1)[-1] != 'CpuFastPathsHook']
    cfg.custom_hooks = [*others, dict(type='CpuFastPathsHook', dtype='auto')]
