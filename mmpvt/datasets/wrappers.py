"""Reaching the datasets inside OpenMMLab's dataset wrappers, built or as configs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def leaf_datasets(dataset: Any) -> list[Any]:
    """The datasets inside ``RepeatDataset`` / ``ClassBalancedDataset`` / ``ConcatDataset`` wrappers.

    Args:
        dataset: a built dataset (wrappers hold ``dataset`` or ``datasets`` attributes) or a
            dataset config (wrappers hold ``dataset`` or ``datasets`` keys).

    Returns:
        The innermost datasets (or configs), in order.
    """
    if isinstance(dataset, Mapping):
        children = dataset.get('datasets') or ([dataset['dataset']] if 'dataset' in dataset else None)
    elif hasattr(dataset, 'datasets'):
        children = dataset.datasets
    else:
        children = [dataset.dataset] if hasattr(dataset, 'dataset') else None
    if children is None:
        return [dataset]
    return [leaf for child in children for leaf in leaf_datasets(child)]
