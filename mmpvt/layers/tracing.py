"""Whether the model is being traced (``torch.export``, ``torch.compile``, ``torch.jit``, ONNX export)."""

from __future__ import annotations

import torch


def tracing() -> bool:
    """True while torch.export, torch.compile or torch.jit trace the model (both ONNX exporters included).

    Traced graphs must hold only portable ops with shapes kept symbolic, so the
    eager-only shortcuts (oneDNN kernels, patch GEMMs, size checks) step aside.
    """
    return (
        torch.compiler.is_exporting()
        or torch.compiler.is_compiling()
        or torch.jit.is_tracing()
        or torch.jit.is_scripting()
    )
