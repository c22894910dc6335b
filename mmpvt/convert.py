"""Checkpoint layout conversion: official PVT / mmdet PVT / timm PVTv2 / mmpvt state dicts to mmpvt's.

One pure function, :func:`convert_state_dict` (state dict in, new state dict out; the
input is never modified), shared by the model loader (:func:`mmpvt.checkpoint.load_pretrained`)
and ``tools/model_converters/pvt2mmpvt.py``. It recognises the layout from the keys:

* ``official``: the whai362/PVT ImageNet release, v1 and v2 (``patch_embed{s}``,
  ``pos_embed{s}``, ``block{s}.{j}``, ``norm{s}``; stages numbered from 1). ``cls_token``,
  ``norm.*`` and ``head.*`` are dropped, and so is the class-token entry of ``pos_embed4``.
* ``mmdet``: mmdet 3.x ``PyramidVisionTransformer(V2)`` (``layers.{s}.0`` patch embedding,
  ``layers.{s}.1.0.pos_embed``, blocks at ``layers.{s}.1.{j+1}`` with a position embedding
  and ``layers.{s}.1.{j}`` without, ``layers.{s}.2`` stage norm). Its attention's
  ``in_proj`` is split into ``q`` and ``kv``; its 1×1-conv FFN weights become linear ones.
* ``timm``: timm's ``PyramidVisionTransformerV2`` (``patch_embed``, ``stages.{s}.downsample`` for the
  later patch embeddings, ``stages.{s}.blocks.{j}``, ``stages.{s}.norm``, ``mlp.dwconv`` without the
  official inner ``dwconv``), how the official PVTv2 weights usually arrive through ``timm``; ``head.*``
  is dropped.
* ``mmpvt``: ours (``stages.{s}.…``), kept as is.

The backbone may sit under any prefix (``backbone.`` in a detector or segmentor
checkpoint, ``module.`` from DataParallel): that part is converted in place and every
other key (neck, heads) is kept unchanged, so whole trained models can be moved over.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from .models.pvt import resample_pos_embed

#: (pattern of an old key, template of the new key, tensor op or None). Named groups:
#: ``s1`` a 1-based stage, ``s`` a 0-based stage, ``j`` a block, any other is copied.
Rule = tuple[str, str, str | None]

OFFICIAL_RULES: tuple[Rule, ...] = (
    (r'patch_embed(?P<s1>\d+)\.(?P<rest>.+)', 'stages.{s}.patch_embed.{rest}', None),
    (r'pos_embed(?P<s1>\d+)', 'stages.{s}.pos_embed', 'drop_cls'),
    (r'block(?P<s1>\d+)\.(?P<j>\d+)\.mlp\.dwconv\.dwconv\.(?P<p>\w+)', 'stages.{s}.blocks.{j}.mlp.dwconv.{p}', None),
    (r'block(?P<s1>\d+)\.(?P<j>\d+)\.(?P<rest>.+)', 'stages.{s}.blocks.{j}.{rest}', None),
    (r'norm(?P<s1>\d+)\.(?P<rest>.+)', 'stages.{s}.norm.{rest}', None),
)
#: Parts of an official checkpoint that a backbone does not have.
OFFICIAL_UNUSED = r'cls_token|norm\..+|head\..+'

#: timm's names are ours, except where the patch embeddings live (timm renamed the official keys the
#: same way: its ``_checkpoint_filter_fn`` maps ``patch_embed{s}``, ``block{s}``, ``norm{s}`` there).
TIMM_RULES: tuple[Rule, ...] = (
    (r'patch_embed\.(?P<rest>.+)', 'stages.0.patch_embed.{rest}', None),
    (r'stages\.(?P<s>\d+)\.downsample\.(?P<rest>.+)', 'stages.{s}.patch_embed.{rest}', None),
    (r'stages\.(?P<s>\d+)\.blocks\.(?P<j>\d+)\.(?P<rest>.+)', 'stages.{s}.blocks.{j}.{rest}', None),
    (r'stages\.(?P<s>\d+)\.norm\.(?P<rest>.+)', 'stages.{s}.norm.{rest}', None),
)
#: timm's classifier, which a backbone does not have.
TIMM_UNUSED = r'head\..+'

_BLOCK = r'layers\.(?P<s>\d+)\.1\.(?P<j>\d+)\.'
MMDET_RULES: tuple[Rule, ...] = (
    (r'layers\.(?P<s>\d+)\.0\.projection\.(?P<p>\w+)', 'stages.{s}.patch_embed.proj.{p}', None),
    (r'layers\.(?P<s>\d+)\.0\.norm\.(?P<p>\w+)', 'stages.{s}.patch_embed.norm.{p}', None),
    (r'layers\.(?P<s>\d+)\.1\.0\.pos_embed', 'stages.{s}.pos_embed', None),
    (_BLOCK + r'attn\.attn\.in_proj_(?P<p>weight|bias)', 'stages.{s}.blocks.{j}.attn.q.{p}', 'split_qkv'),
    (_BLOCK + r'attn\.attn\.out_proj\.(?P<p>\w+)', 'stages.{s}.blocks.{j}.attn.proj.{p}', None),
    (_BLOCK + r'ffn\.layers\.0\.(?P<p>\w+)', 'stages.{s}.blocks.{j}.mlp.fc1.{p}', 'conv1x1_to_linear'),
    (_BLOCK + r'ffn\.layers\.1\.(?P<p>\w+)', 'stages.{s}.blocks.{j}.mlp.dwconv.{p}', None),
    # fc2 is ffn.layers.3 in v1 and ffn.layers.4 in v2 (after the dwconv); the other index holds no weights.
    (_BLOCK + r'ffn\.layers\.[34]\.(?P<p>\w+)', 'stages.{s}.blocks.{j}.mlp.fc2.{p}', 'conv1x1_to_linear'),
    (_BLOCK + r'(?P<rest>(?:norm1|norm2|attn\.sr|attn\.norm)\.\w+)', 'stages.{s}.blocks.{j}.{rest}', None),
    (r'layers\.(?P<s>\d+)\.2\.(?P<p>\w+)', 'stages.{s}.norm.{p}', None),
)

#: Each layout's renaming rules, and the keys of it that a backbone does not use.
RULES = {'official': OFFICIAL_RULES, 'mmdet': MMDET_RULES, 'timm': TIMM_RULES}
UNUSED = {'official': OFFICIAL_UNUSED, 'timm': TIMM_UNUSED}

#: A key that only this layout's backbone has (the first patch embedding's conv).
LAYOUT_MARKERS: dict[str, str] = {
    'mmpvt': r'stages\.0\.patch_embed\.proj\.weight',
    'mmdet': r'layers\.0\.0\.projection\.weight',
    'official': r'patch_embed1\.proj\.weight',
    'timm': r'stages\.1\.downsample\.proj\.weight',  # its first patch embedding has no stage in its name
}


@dataclass
class ConversionReport:
    """What :func:`convert_with_report` did, for logs and the command-line tool.

    Attributes:
        layout: ``'official'``, ``'mmdet'``, ``'timm'`` or ``'mmpvt'``.
        prefix: prefix of the backbone's keys (``''``, ``'backbone.'``, …).
        renamed: (old key, new key) per converted tensor; in_proj appears twice (q, kv).
        dropped: keys of the source that a backbone does not use.
        kept: keys outside the backbone (or not recognised in it), copied unchanged.
        resized: (key, old shape, new shape) per resized position embedding.
    """

    layout: str
    prefix: str
    renamed: list[tuple[str, str]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    resized: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)


def detect_layout(state_dict: Mapping[str, torch.Tensor]) -> tuple[str, str]:
    """The layout of the PVT backbone in ``state_dict`` and the prefix of its keys.

    Raises:
        ValueError: if no PVT backbone is recognised, or several are (ambiguous).
    """
    found = set()
    for key in state_dict:
        for layout, marker in LAYOUT_MARKERS.items():
            match = re.fullmatch(rf'(?P<prefix>(?:.*\.)?){marker}', key)
            if match:
                found.add((layout, match['prefix']))
    if len(found) == 1:
        return found.pop()
    if not found:
        sample = ', '.join(list(state_dict)[:5])
        raise ValueError(
            'no PVT checkpoint layout recognised (official, mmdet, timm or mmpvt): none of its keys is a first '
            f'patch embedding such as {", ".join(LAYOUT_MARKERS.values())}; its keys begin {sample}'
        )
    listed = ', '.join(f'{layout} under {prefix!r}' for layout, prefix in sorted(found))
    raise ValueError(f'several PVT backbones in one state dict ({listed}); pass the prefix of the one to use')


def _ops() -> dict[str, Callable[[str, torch.Tensor], list[tuple[str, torch.Tensor]]]]:
    """Tensor operations of the rules: new key and tensor -> the (key, tensor) pairs to store."""

    def split_qkv(key: str, value: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        # nn.MultiheadAttention stacks [q; k; v] rows; the official kv linear holds [k; v].
        c = value.shape[0] // 3
        return [(key, value[:c].clone()), (key.replace('.attn.q.', '.attn.kv.'), value[c:].clone())]

    def conv1x1_to_linear(key: str, value: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        return [(key, value.reshape(value.shape[:2]) if value.ndim == 4 else value)]

    def drop_cls(key: str, value: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
        n = value.shape[1]
        if not _is_square(n) and _is_square(n - 1):  # 1 class token + an H×W grid (50 = 1 + 7·7)
            value = value[:, 1:]
        return [(key, value)]

    return dict(split_qkv=split_qkv, conv1x1_to_linear=conv1x1_to_linear, drop_cls=drop_cls)


def _is_square(n: int) -> bool:
    return n > 0 and math.isqrt(n) ** 2 == n


def _mmdet_pos_stages(state_dict: Mapping[str, torch.Tensor]) -> set[int]:
    """Stages of an mmdet layout whose block list starts with a position embedding."""
    return {int(m['s']) for k in state_dict if (m := re.fullmatch(r'layers\.(?P<s>\d+)\.1\.0\.pos_embed', k))}


def _rename(key: str, rules: tuple[Rule, ...], block_offset: set[int]) -> tuple[str, str | None] | None:
    """(new key, op) of the first rule matching ``key``, or None if none does."""
    for pattern, template, op in rules:
        match = re.fullmatch(pattern, key)
        if match is None:
            continue
        groups = match.groupdict()
        if 's1' in groups:
            groups['s'] = int(groups.pop('s1')) - 1
        if 'j' in groups:
            groups['j'] = int(groups['j']) - (int(groups['s']) in block_offset)
        return template.format(**groups), op
    return None


def _convert_backbone(
    backbone: Mapping[str, torch.Tensor], layout: str, report: ConversionReport
) -> dict[str, torch.Tensor]:
    """Convert the (prefix-stripped) backbone keys of one layout to mmpvt's; fill ``report``."""
    if layout == 'mmpvt':
        report.renamed.extend((k, k) for k in backbone)
        return dict(backbone)
    rules, unused = RULES[layout], UNUSED.get(layout)
    offset = _mmdet_pos_stages(backbone) if layout == 'mmdet' else set()
    ops, out = _ops(), {}
    for key, value in backbone.items():
        if unused and re.fullmatch(unused, key):
            report.dropped.append(key)
            continue
        renamed = _rename(key, rules, offset)
        if renamed is None:
            report.kept.append(key)
            out[key] = value
            continue
        new_key, op = renamed
        for k, v in ops[op](new_key, value) if op else [(new_key, value)]:
            report.renamed.append((key, k))
            out[k] = v
    return out


def split_prefix(
    state_dict: Mapping[str, torch.Tensor], prefix: str
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Split ``state_dict`` by key prefix (``'backbone.'``, ``'module.'``).

    Returns:
        The entries whose key starts with ``prefix``, the prefix removed, and every other
        entry unchanged.
    """
    under, rest = {}, {}
    for key, value in state_dict.items():
        if key.startswith(prefix):
            under[key[len(prefix) :]] = value
        else:
            rest[key] = value
    return under, rest


def _resize_pos_embeds(
    state_dict: dict[str, torch.Tensor], prefix: str, model: nn.Module, report: ConversionReport
) -> None:
    """Resize, in ``state_dict``, position embeddings whose grid differs from ``model``'s."""
    for name, target in model.state_dict().items():
        key = prefix + name
        if not name.endswith('pos_embed') or key not in state_dict:
            continue
        value = state_dict[key]
        if value.ndim != 3 or value.shape[2] != target.shape[2] or value.shape[1] == target.shape[1]:
            continue
        if _is_square(value.shape[1]) and _is_square(target.shape[1]):
            side = math.isqrt(target.shape[1])
            state_dict[key] = resample_pos_embed(value, (side, side)).contiguous()
            report.resized.append((key, tuple(value.shape), tuple(target.shape)))


def convert_with_report(
    state_dict: Mapping[str, torch.Tensor], model: nn.Module | None = None
) -> tuple[dict[str, torch.Tensor], ConversionReport]:
    """Convert ``state_dict`` to mmpvt's layout; also say what was renamed, dropped and kept.

    Args:
        state_dict: a PVT state dict of any supported layout, bare or under a prefix.
        model: the mmpvt PVT it is for; if given, position embeddings laid out for
            another grid are bilinearly resized to the model's ``pretrain_img_size`` grid.

    Returns:
        The converted state dict (backbone keys keep their prefix, other keys are
        copied unchanged) and the :class:`ConversionReport`.
    """
    layout, prefix = detect_layout(state_dict)
    report = ConversionReport(layout, prefix)
    backbone, others = split_prefix(state_dict, prefix)
    converted = {prefix + k: v for k, v in _convert_backbone(backbone, layout, report).items()}
    report.renamed = [(prefix + old, prefix + new) for old, new in report.renamed]
    report.dropped = [prefix + k for k in report.dropped]
    report.kept = [prefix + k for k in report.kept]
    report.kept.extend(others)
    converted.update(others)
    if model is not None:
        _resize_pos_embeds(converted, prefix, model, report)
    return converted, report


def convert_state_dict(
    state_dict: Mapping[str, torch.Tensor], model: nn.Module | None = None
) -> dict[str, torch.Tensor]:
    """Return ``state_dict`` in mmpvt's layout (``stages.{i}.…``); see :func:`convert_with_report`."""
    return convert_with_report(state_dict, model)[0]
