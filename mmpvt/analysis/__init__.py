"""Cost analysis: multiply-add counting that includes attention matrix products."""

from .flops import MacCount, backbone_macs, config_macs, count_macs

__all__ = ['MacCount', 'backbone_macs', 'config_macs', 'count_macs']
