"""Cost analysis: multiply-add counting that includes attention matrix products."""

from .flops import SDPA_CPU_FLOP_FORMULA, MacCount, backbone_macs, config_macs, count_macs

__all__ = ['SDPA_CPU_FLOP_FORMULA', 'MacCount', 'backbone_macs', 'config_macs', 'count_macs']
