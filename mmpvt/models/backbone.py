"""The registered OpenMMLab backbones ``PVT`` and ``PVTv2``, and the registered SRA layer.

They are the plain :class:`~mmpvt.models.pvt.PyramidVisionTransformer` plus what an
OpenMMLab model expects: ``init_cfg`` (with ``Pretrained`` loading that converts
official and mmdet checkpoints), ``frozen_stages`` and ``BaseModule`` behaviour. Unlike the core,
this module needs mmengine; importing it registers the three classes (:mod:`mmpvt.registry`).
"""

from __future__ import annotations

import copy
from typing import Any

from mmengine.model import BaseModule
from torch import nn

from ..layers import SpatialReductionAttention
from ..registry import register_model
from .pvt import PyramidVisionTransformer, arch_kwargs, count_stages

register_model(SpatialReductionAttention)


@register_model
class PVT(PyramidVisionTransformer, BaseModule):
    """PVT backbone for mmdet and mmseg (v1 by default; any arch of ``ARCH_SETTINGS``).

    Args:
        arch: variant name (``tiny``, ``small``, ``medium``, ``large``, ``b0``…``b5``,
            ``b2_li``), or None to give every per-stage tuple explicitly.
        frozen_stages: -1 freezes nothing; 0 freezes the first patch embedding (and
            its position embedding); k >= 1 freezes stages 1..k entirely. Frozen parts
            get no gradient and stay in eval mode across ``train()``.
        init_cfg: OpenMMLab init config; ``dict(type='Pretrained', checkpoint=PATH)``
            accepts official PVT, mmdet and mmpvt checkpoints (converted on load).
        pretrained: checkpoint path, shorthand for the Pretrained ``init_cfg``; mmseg's
            ``EncoderDecoder`` passes its model-level ``pretrained`` in here.
        **kwargs: any argument of :class:`PyramidVisionTransformer`, overriding the arch.
    """

    def __init__(
        self,
        arch: str | None = 'small',
        *,
        frozen_stages: int = -1,
        init_cfg: dict[str, Any] | list[dict[str, Any]] | None = None,
        pretrained: str | None = None,
        **kwargs: Any,
    ) -> None:
        if pretrained is not None:
            if init_cfg is not None:
                raise ValueError('give either pretrained or init_cfg, not both')
            init_cfg = dict(type='Pretrained', checkpoint=pretrained)
        settings = arch_kwargs(arch, **kwargs)
        num_stages = count_stages(settings)  # checked before building: large variants take seconds
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f'frozen_stages must be in [-1, {num_stages}], got {frozen_stages}')
        # PyramidVisionTransformer's super().__init__() runs BaseModule.__init__ (MRO).
        super().__init__(**settings)
        self.arch = arch
        self.init_cfg = copy.deepcopy(init_cfg)
        self.frozen_stages = frozen_stages
        self._freeze()

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        if self.frozen_stages == 0:
            return [self.stages[0].patch_embed]
        return list(self.stages[: self.frozen_stages])

    def _freeze(self) -> None:
        for module in self._frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False
        if self.frozen_stages == 0 and self.stages[0].pos_embed is not None:
            self.stages[0].pos_embed.requires_grad = False

    def train(self, mode: bool = True) -> PVT:
        """Set train/eval mode, keeping frozen stages in eval mode."""
        super().train(mode)
        for module in self._frozen_modules():
            module.eval()
        return self

    def init_weights(self) -> None:
        """Load ``init_cfg``'s Pretrained checkpoint through mmpvt's converter, else defer to BaseModule."""
        cfgs = self.init_cfg if isinstance(self.init_cfg, list) else [self.init_cfg] if self.init_cfg else []
        pretrained = [cfg for cfg in cfgs if cfg.get('type') == 'Pretrained']
        if not pretrained:
            super().init_weights()
            return
        from ..checkpoint import load_pretrained

        cfg = pretrained[-1]
        load_pretrained(self, cfg['checkpoint'], prefix=cfg.get('prefix'))
        self._is_init = True


@register_model
class PVTv2(PVT):
    """PVT v2 backbone (``arch='b0'``…``'b5'`` or ``'b2_li'``); the same model as :class:`PVT`."""

    def __init__(self, arch: str | None = 'b2', **kwargs: Any) -> None:
        super().__init__(arch, **kwargs)
