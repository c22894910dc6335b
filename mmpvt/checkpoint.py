"""Reading checkpoints safely and loading them into a PVT with loud mismatches.

Every checkpoint read of mmpvt goes through :func:`load_file`, which keeps torch's
``weights_only=True`` unpickler and allow-lists exactly the extra types that
mmengine's own checkpoints carry (:data:`MMENGINE_SAFE_GLOBALS`).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch
from mmengine.logging import HistoryBuffer, print_log
from torch import nn

from .convert import convert_with_report, split_prefix
from .models.pvt import ARCH_SETTINGS

#: Fraction of a model's tensors a checkpoint must provide (with the right shapes) to count as one of
#: that model (:func:`checkpoint_fit`). A checkpoint of the model itself provides all of them; one of
#: a shallower variant of the same family provides about half (PVT-T into PVT-S: 156 of 296), which
#: a threshold of 0.5 would take, leaving the other half at its random initialisation.
MIN_MATCH = 0.9


def history_buffer_getattr(obj: Any, name: str) -> Any:
    """``getattr`` restricted to what mmengine checkpoints need: ``HistoryBuffer``'s statistics methods.

    Every ``HistoryBuffer`` in a checkpoint's message hub pickles its statistics methods
    as ``getattr(HistoryBuffer, 'mean')`` and so on. An unrestricted ``getattr`` would
    defeat the weights-only unpickler, so this one refuses everything else.
    """
    if obj is HistoryBuffer and name in ('min', 'max', 'current', 'mean'):
        return getattr(obj, name)
    raise pickle.UnpicklingError(f'refusing getattr({obj!r}, {name!r}) while loading a checkpoint')


#: Types an mmengine-saved checkpoint holds beyond tensors and builtins: the
#: message hub's ``HistoryBuffer`` (whose statistics methods pickle through a
#: restricted ``getattr``) and numpy scalars/arrays in ``meta``.
MMENGINE_SAFE_GLOBALS: list[Any] = [
    HistoryBuffer,
    (history_buffer_getattr, 'builtins.getattr'),
    np.dtype,
    np.ndarray,
    np._core.multiarray.scalar,
    np._core.multiarray._reconstruct,
    *{type(np.dtype(name)) for name in ('float64', 'float32', 'float16', 'int64', 'int32', 'bool', 'uint8')},
]


def allow_mmengine_checkpoints() -> None:
    """Add :data:`MMENGINE_SAFE_GLOBALS` to torch's safe globals for plain ``torch.load`` calls.

    mmengine 0.10 calls ``torch.load`` without ``weights_only``; torch >= 2.6 then
    uses the safe unpickler, which refuses mmengine's own ``meta``. ``import mmpvt``
    calls this (so mmdet's and mmseg's own tools, given our ``custom_imports``, read
    training checkpoints too), instead of anyone turning safe loading off.
    """
    torch.serialization.add_safe_globals(MMENGINE_SAFE_GLOBALS)


#: How torch's legacy (pre-1.6, non-zip) format begins: its magic number, pickled with protocol 2.
_LEGACY_HEADER = pickle.dumps(torch.serialization.MAGIC_NUMBER, protocol=2)


def is_torch_file(path: str) -> bool:
    """Whether ``path`` is a zip archive (``torch.save`` since 1.6) or starts like torch's legacy format."""
    if zipfile.is_zipfile(path):
        return True
    with open(path, 'rb') as f:
        return f.read(len(_LEGACY_HEADER)) == _LEGACY_HEADER


def missing_checkpoint(path: str) -> str:
    """Why ``path``, which is not a file, is no checkpoint: not found, or a folder (naming its ``.pth`` files)."""
    if not os.path.isdir(path):
        return f'checkpoint file not found: {path}'
    found = sorted(name for name in os.listdir(path) if name.endswith('.pth'))
    inside = f'it holds {", ".join(found[-3:])}' if found else 'it holds no .pth file'
    return f'{path} is a folder, not a checkpoint file ({inside}); expected the path of a .pth file'


def load_file(path: str | os.PathLike[str], map_location: str | torch.device = 'cpu') -> Any:
    """Read a checkpoint with the safe unpickler; clear errors for missing or broken files."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(missing_checkpoint(path))
    if not is_torch_file(path):
        raise ValueError(f'cannot read checkpoint {path}: the file is truncated or corrupt (not a torch.save file)')
    # safe_globals() removes its globals on exit: add only those not already allowed
    # process-wide (allow_mmengine_checkpoints), so that they stay allowed afterwards.
    allowed = torch.serialization.get_safe_globals()
    extra = [item for item in MMENGINE_SAFE_GLOBALS if item not in allowed]
    try:
        with torch.serialization.safe_globals(extra):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f'refusing to load {path}: it holds objects outside the weights-only allow-list '
            f'(tensors, builtins and the types mmengine checkpoints carry): {err}'
        ) from err
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as err:
        raise ValueError(f'cannot read checkpoint {path}: the file is truncated or corrupt ({err})') from err


def extract_state_dict(checkpoint: Any, source: str = 'checkpoint') -> dict[str, torch.Tensor]:
    """The state dict inside a checkpoint: bare, or under ``state_dict`` or ``model``."""
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f'{source} holds a {type(checkpoint).__name__}, expected a state dict (a mapping)')
    for key in ('state_dict', 'model'):
        if key in checkpoint and isinstance(checkpoint[key], Mapping):
            checkpoint = checkpoint[key]
            break
    state_dict = {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}
    if not state_dict:
        raise ValueError(f'{source} holds no tensors; expected a state dict of a PVT model')
    return state_dict


def named_tensors(tree: Any, prefix: str = '') -> Iterator[tuple[str, torch.Tensor]]:
    """Every tensor in nested mappings and sequences (a checkpoint, a state dict), named by its dotted path."""
    if isinstance(tree, torch.Tensor):
        yield prefix, tree
    elif isinstance(tree, Mapping):
        for key, value in tree.items():
            yield from named_tensors(value, f'{prefix}.{key}' if prefix else str(key))
    elif isinstance(tree, (list, tuple)):
        for index, value in enumerate(tree):
            yield from named_tensors(value, f'{prefix}.{index}' if prefix else str(index))


def non_finite_tensors(tree: Any) -> list[str]:
    """The names of the floating-point tensors in ``tree`` that hold an inf or a NaN (the one finiteness rule).

    Parameters, buffers (BatchNorm's running statistics) and optimizer state alike: pass a model's
    ``state_dict()``, an optimizer's, or a whole checkpoint. One vectorised pass over the values (their L2
    norm, ``torch.nn.utils.get_total_norm``, which any inf or NaN makes non-finite) and one
    synchronisation; the tensors are examined one by one (``isfinite``, many times slower on the CPU) only
    when that norm is not finite, which values above about 1e19 also make it.

    Args:
        tree: tensors in nested mappings, lists and tuples.

    Returns:
        Dotted names (``'state_dict.decode_head.bn.running_var'``), in the order found; empty if all are finite.
    """
    floats = [(name, t) for name, t in named_tensors(tree) if t.is_floating_point() and t.numel()]
    if not floats:
        return []
    norm = torch.nn.utils.get_total_norm([t.detach() for _, t in floats], norm_type=2.0)
    if torch.isfinite(norm):
        return []
    return [name for name, t in floats if not bool(torch.isfinite(t.detach()).all())]


def load_pretrained(
    model: nn.Module,
    path: str | os.PathLike[str],
    *,
    prefix: str | None = None,
) -> tuple[list[str], list[str]]:
    """Load a checkpoint file into ``model``, converting known PVT layouts.

    The file is only read. A backbone found under a prefix (``backbone.`` of a whole
    detector) is used on its own; see :func:`mmpvt.convert.convert_with_report`.

    Args:
        model: the PVT to load into.
        path: checkpoint file (official, timm, mmdet or mmpvt layout; bare or wrapped).
        prefix: keep only keys under this prefix (e.g. ``'backbone.'``), stripped.

    Returns:
        The missing and unexpected keys, which are also logged by name.
    """
    source = os.fspath(path)
    state_dict = extract_state_dict(load_file(source), source)
    if prefix:
        state_dict = split_prefix(state_dict, prefix)[0]
        if not state_dict:
            raise ValueError(f'{source} has no keys under the prefix {prefix!r}')
    try:
        state_dict, report = convert_with_report(state_dict, model)
    except ValueError as err:
        raise ValueError(f'cannot load {source}: {err}') from err
    print_log(f'{source}: {report.layout} PVT layout under prefix {report.prefix!r}', logger='current')
    if report.layout == 'mmdet':
        note_mmdet_numerics(model, source)
    if report.prefix:
        state_dict = split_prefix(state_dict, report.prefix)[0]
    if report.dropped:
        print_log(f'dropped (not part of a backbone): {", ".join(report.dropped)}', logger='current')
    for key, old, new in report.resized:
        print_log(f'resized {key} from {old} to {new} (bilinear)', logger='current')
    return load_converted(model, state_dict, source=source)


#: LayerNorm eps that mmdet's PVT uses everywhere, also where the official release uses 1e-5.
MMDET_EMBED_NORM_EPS = 1e-6


def note_mmdet_numerics(model: nn.Module, source: str) -> None:
    """Log that an mmdet-trained PVT used LayerNorm eps 1e-6 where ``model`` uses another one.

    Loading never changes the model: the user decides whether to match mmdet's numerics.
    """
    norm = next((m.norm for name, m in model.named_modules() if name.endswith('patch_embed')), None)
    eps = getattr(norm, 'eps', None)
    if eps is not None and eps != MMDET_EMBED_NORM_EPS:
        print_log(
            f'{source} is an mmdet PVT checkpoint: mmdet trains with LayerNorm eps {MMDET_EMBED_NORM_EPS} after the '
            f"patch embedding and the SR reduction, this model uses {eps} there (the official release's value). "
            f'To reproduce the mmdet-trained model exactly, build the backbone with '
            f'embed_norm_eps={MMDET_EMBED_NORM_EPS}.',
            logger='current',
            level=30,
        )


class CheckpointFit(NamedTuple):
    """How a checkpoint's tensors fit a model: what :func:`checkpoint_fit` found."""

    #: tensors of the model the checkpoint provides with the right shape
    matched: int
    #: tensors of the model
    total: int
    #: ``'KEY: checkpoint (SHAPE) vs model (SHAPE)'`` for each tensor of another shape
    wrong_shapes: list[str]
    #: checkpoint keys under one of the model's own top-level modules that the model lacks (a deeper variant)
    unknown: list[str]
    #: the keys of ``wrong_shapes`` that are a classifier of another number of classes (:func:`class_layer`)
    class_layers: list[str]

    @property
    def fits(self) -> bool:
        """No tensor of another shape, none the model lacks, at least :data:`MIN_MATCH` of the model's found."""
        return not self.wrong_shapes and not self.unknown and self.matched >= MIN_MATCH * self.total

    @property
    def fits_but_classes(self) -> bool:
        """It would fit but for classifiers of another number of classes: a checkpoint to fine-tune (``load_from``)."""
        return (
            bool(self.class_layers)
            and len(self.class_layers) == len(self.wrong_shapes)
            and not self.unknown
            and self.matched >= MIN_MATCH * self.total
        )


def class_layer(key: str, checkpoint: Sequence[int], model: Sequence[int]) -> bool:
    """Whether a tensor of another shape is a classifier trained for another number of classes.

    Such a tensor sits outside the backbone and neck and differs only in its first dimension (the
    outputs: classes, or classes × anchors): mmdet's ``retina_cls``, ``fc_cls``, ``conv_logits``,
    DINO's label embedding, mmseg's ``conv_seg``. A backbone of another width differs in other
    dimensions too, or sits under ``backbone.``.
    """
    if key.split('.', 1)[0] in ('backbone', 'neck') or len(checkpoint) != len(model) or not model:
        return False
    return checkpoint[0] != model[0] and tuple(checkpoint[1:]) == tuple(model[1:])


def checkpoint_fit(model: nn.Module, shapes: Mapping[str, torch.Size]) -> CheckpointFit:
    """Compare a checkpoint's tensor shapes with ``model``'s state dict: the one fit check of mmpvt.

    Used for pretrained backbones (:func:`load_converted`) and for whole detectors and segmentors
    (``load_from``, ``--resume``, the checkpoint ``tools/test.py`` evaluates, the demo, the export and the
    attention visualiser), with one threshold.

    Args:
        model: the model the checkpoint is meant for (not a DDP-style wrapper).
        shapes: the checkpoint's state-dict keys and their tensors' shapes.
    """
    own = model.state_dict()
    roots = {k.split('.', 1)[0] for k in own}
    other = [k for k, shape in shapes.items() if k in own and shape != own[k].shape]
    wrong = [f'{k}: checkpoint {tuple(shapes[k])} vs model {tuple(own[k].shape)}' for k in other]
    unknown = [k for k in shapes if k not in own and k.split('.', 1)[0] in roots]
    matched = sum(1 for k, shape in shapes.items() if k in own and shape == own[k].shape)
    classes = [k for k in other if class_layer(k, shapes[k], own[k].shape)]
    return CheckpointFit(matched, len(own), wrong, unknown, classes)


def variant_of(shapes: Mapping[str, Sequence[int]]) -> str | None:
    """The PVT variant (a key of ``ARCH_SETTINGS``) whose backbone has these mmpvt-layout tensors, if one has.

    Read from the structure: blocks per stage, each stage's width, the first MLP's ratio, v2's depth-wise
    conv and linear SRA's reduction at the last stage. Keys may carry a ``backbone.`` prefix.
    """
    shapes = split_prefix(dict(shapes), 'backbone.')[0] or dict(shapes)
    depths: dict[int, set[str]] = {}
    for key in shapes:
        parts = key.split('.')
        if len(parts) > 3 and parts[0] == 'stages' and parts[2] == 'blocks':
            depths.setdefault(int(parts[1]), set()).add(parts[3])
    widths = [shapes.get(f'stages.{i}.patch_embed.proj.weight') for i in range(4)]
    fc1 = shapes.get('stages.0.blocks.0.mlp.fc1.weight')
    if sorted(depths) != [0, 1, 2, 3] or None in widths or fc1 is None:
        return None
    found = dict(
        depths=tuple(len(depths[i]) for i in range(4)),
        embed_dims=tuple(int(w[0]) for w in widths),
        mlp_ratio=int(fc1[0]) // int(fc1[1]),
        mlp_dwconv='stages.0.blocks.0.mlp.dwconv.weight' in shapes,
        linear_sra='stages.3.blocks.0.attn.sr.weight' in shapes,
    )
    for arch, settings in ARCH_SETTINGS.items():
        expected = dict(
            depths=tuple(settings['depths']),
            embed_dims=tuple(settings['embed_dims']),
            mlp_ratio=int(settings['mlp_ratios'][0]),
            mlp_dwconv=bool(settings.get('mlp_dwconv')),
            linear_sra=bool(settings.get('linear_sra')),
        )
        if expected == found:
            return arch
    return None


def variant_hint(model: nn.Module, shapes: Mapping[str, Sequence[int]]) -> str:
    """``' It looks like a PVT 'small' checkpoint, the model is 'tiny' ...'`` when both variants are known, else ''."""
    theirs = variant_of(shapes)
    ours = variant_of({k: v.shape for k, v in model.state_dict().items()})
    if theirs is None or theirs == ours:
        return ''
    where = 'model.backbone.arch' if any(k.startswith('backbone.') for k in model.state_dict()) else 'arch'
    mine = f'the model is PVT {ours!r}' if ours else 'the model is another PVT'
    return (
        f" It looks like a checkpoint of PVT {theirs!r} and {mine}: set {where}='{theirs}' "
        f"(and the neck's in_channels), or use a checkpoint of the model's variant."
    )


def load_converted(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    *,
    source: str,
) -> tuple[list[str], list[str]]:
    """Load an mmpvt-layout state dict; log mismatches; error if it does not fit the model.

    It does not fit (:func:`checkpoint_fit`) when a tensor's shape differs, when it holds
    parameters of the model's own modules that the model lacks (a deeper variant), or when it
    provides fewer than :data:`MIN_MATCH` of the model's keys.
    """
    shapes = {k: v.shape for k, v in state_dict.items()}
    fit = checkpoint_fit(model, shapes)
    problems = fit.wrong_shapes + [f'{k} is not in the model' for k in fit.unknown]
    if not fit.fits:
        detail = '; '.join(problems[:3]) or f"only {fit.matched} of the model's {fit.total} keys found"
        hint = variant_hint(model, shapes) or ' Is it a checkpoint of another model or another PVT variant?'
        raise ValueError(f'{source} does not fit this {type(model).__name__}: {detail}.{hint}')
    missing, unexpected = model.load_state_dict(state_dict, strict=False)
    print_log(f'loaded {fit.matched}/{fit.total} tensors from {source}', logger='current')
    if missing:
        print_log(f'missing keys (left as initialised): {", ".join(missing)}', logger='current', level=30)
    if unexpected:
        print_log(f'unexpected keys (ignored): {", ".join(unexpected)}', logger='current', level=30)
    return list(missing), list(unexpected)
