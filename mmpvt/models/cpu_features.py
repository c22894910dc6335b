"""Which precision the CPU paths should run in, chosen from the CPU's matrix units.

PVT is made of matrix products. On a CPU with Intel AMX (``/proc/cpuinfo`` flags ``amx_bf16`` and
``amx_tile``) bfloat16 products run several times faster than float32 ones (6.8× for a 2048³ GEMM on
a 2-core Xeon), so bf16 inference and training pay. A CPU with AVX512-BF16 but no AMX (AMD Zen 4)
gains about 1.1× on the GEMM, which the casts around it eat: there bf16 would be slower than fp32.
:func:`choose_cpu_dtype` therefore picks bf16 by default only on AMX, measures the GEMM rates once
where the CPU has bf16 vector instructions without AMX, and says why it chose what it chose. bf16
asked for by name is honoured, but where it runs slower than fp32 the choice says so, to be logged as
a warning (on a Zen 1 EPYC with AVX2 only, oneDNN emulates bf16: a 2048³ GEMM ran 0.2 GFLOP/s, fp32 69).

The flags alone do not decide: ``ONEDNN_MAX_CPU_ISA`` (or the older ``DNNL_MAX_CPU_ISA``) below an
AMX level keeps oneDNN, and so torch's bf16 products, off the matrix unit, and so does an OS that
refuses the process AMX's register state. On the 2-core Xeon with AMX, a 512³ bf16 GEMM then ran
0.54× fp32's speed capped at ``AVX512_CORE_BF16`` (a Zen 4's instruction set), 0.2× at
``AVX512_CORE`` and 0.01× at ``AVX2``: where :func:`amx_blocked` finds such a block the rates are
measured as on a CPU without AMX.

Torch only; this module never changes a model.
"""

from __future__ import annotations

import functools
import logging
import os
import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import torch

#: The flags of Intel's bf16 matrix unit (both are needed: the tile registers and the bf16 product).
AMX_FLAGS = frozenset({'amx_bf16', 'amx_tile'})
#: bf16 vector instructions without a matrix unit (AVX512-BF16 on Zen 4 and Cooper Lake, AVX-NE-CONVERT).
BF16_VECTOR_FLAGS = frozenset({'avx512_bf16', 'avx_ne_convert'})
#: Without AMX, bf16 is chosen only if a bf16 GEMM measures at least this many times faster than fp32's:
#: a whole model gains much less than its GEMMs (on AMX, 6.8× on the GEMM gave 2.3× on PVT-S), and
#: below about 2× the casts and the non-GEMM ops in bf16 make the model slower than in fp32.
MIN_GEMM_SPEEDUP = 2.0
#: oneDNN's variables that cap the instruction set its kernels use; the first one set (non-empty) counts.
ONEDNN_ISA_VARIABLES = ('ONEDNN_MAX_CPU_ISA', 'DNNL_MAX_CPU_ISA')

DTYPE_NAMES: dict[str, torch.dtype] = {
    'float32': torch.float32,
    'fp32': torch.float32,
    'bfloat16': torch.bfloat16,
    'bf16': torch.bfloat16,
}


@dataclass(frozen=True)
class PrecisionChoice:
    """The dtype the CPU paths run in, and why.

    Attributes:
        dtype: ``torch.float32`` or ``torch.bfloat16``.
        reason: one line for the log, naming the CPU feature (or the request) that decided.
        slower: True where bf16 was asked for on a CPU where it runs slower than fp32 (no usable
            AMX, and a bf16 GEMM measured below :data:`MIN_GEMM_SPEEDUP`): log it as a warning.
    """

    dtype: torch.dtype
    reason: str
    slower: bool = False

    def __str__(self) -> str:
        return f'{str(self.dtype).removeprefix("torch.")} ({self.reason})'

    @property
    def log_level(self) -> int:
        """The level to log this choice at: WARNING where it is ``slower``, else INFO."""
        return logging.WARNING if self.slower else logging.INFO


def cpu_flags(path: str = '/proc/cpuinfo') -> frozenset[str]:
    """The feature flags of the first CPU in ``path`` (empty where the file does not exist: not Linux)."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(('flags', 'Features')):
                    return frozenset(line.split(':', 1)[1].split())
    except OSError:
        pass
    return frozenset()


def has_amx(flags: Iterable[str] | None = None) -> bool:
    """True if the CPU has Intel AMX with bf16 products (``amx_bf16`` and ``amx_tile``)."""
    return set(cpu_flags() if flags is None else flags) >= AMX_FLAGS


def onednn_isa_cap(environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """The variable and value that cap oneDNN's instruction set in ``environ`` (the process's), or None.

    oneDNN reads ``ONEDNN_MAX_CPU_ISA`` and, when that is unset or empty, ``DNNL_MAX_CPU_ISA``.
    """
    environ = os.environ if environ is None else environ
    for variable in ONEDNN_ISA_VARIABLES:
        value = environ.get(variable, '').strip()
        if value:
            return variable, value
    return None


def _amx_granted() -> bool:
    """True unless the OS refuses this process AMX's tile state (torch asks for it as oneDNN does)."""
    init = getattr(torch.cpu, '_init_amx', None)
    return bool(init()) if callable(init) else True


def amx_blocked(environ: Mapping[str, str] | None = None, granted: Callable[[], bool] = _amx_granted) -> str | None:
    """Why oneDNN cannot use the CPU's AMX in this process, or None where nothing stops it.

    Blocked: an instruction-set cap (:func:`onednn_isa_cap`) that names no AMX level (oneDNN's
    AMX levels have AMX in their name; ``ALL`` and ``DEFAULT`` lift the cap), or ``granted()``
    False. A name oneDNN does not know also counts as a block here; the measurement that
    follows finds out what it does.
    """
    cap = onednn_isa_cap(environ)
    if cap is not None:
        variable, value = cap
        if 'AMX' not in value.upper() and value.upper() not in ('ALL', 'DEFAULT'):
            return f'{variable}={value} keeps oneDNN from it'
    if not granted():
        return 'the OS refused this process its tile registers'
    return None


@functools.lru_cache(maxsize=1)
def bf16_gemm_speedup(n: int = 512, repeats: int = 5) -> float:
    """How many times faster an n×n×n bf16 ``torch.mm`` runs than an fp32 one here, measured once.

    The two alternate, so load from other processes slows both alike. At 512 it takes 0.02 s
    where bf16 products are fast, 0.7 s where oneDNN emulates them (capped at AVX2) and 1.2 s on
    the Zen 1 EPYC (AVX2 only; asked only for bf16 by name there, which then warns); on the
    2-core Xeon with AMX, 512 and 1024 measured 3.1× and 3.4×.
    """
    times: dict[torch.dtype, list[float]] = {torch.float32: [], torch.bfloat16: []}
    mats = {dtype: (torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)) for dtype in times}
    for rep in range(repeats + 1):
        for dtype, (a, b) in mats.items():
            start = time.perf_counter()
            torch.mm(a, b)
            if rep:  # the first round warms up oneDNN
                times[dtype].append(time.perf_counter() - start)
    return statistics.median(times[torch.float32]) / statistics.median(times[torch.bfloat16])


def requested_cpu_dtype(requested: str | torch.dtype) -> torch.dtype | None:
    """The dtype ``requested`` names, None for ``'auto'``; raises ValueError for anything else.

    Checks a name without looking at the CPU, so a config can be checked when it is built.
    """
    if isinstance(requested, str):
        if requested == 'auto':
            return None
        if requested not in DTYPE_NAMES:
            raise ValueError(f'unknown CPU dtype {requested!r}: choose auto, {", ".join(DTYPE_NAMES)}')
        requested = DTYPE_NAMES[requested]
    if requested not in (torch.float32, torch.bfloat16):
        raise ValueError(f'the CPU paths run float32 or bfloat16, not {requested}')
    return requested


def choose_cpu_dtype(
    requested: str | torch.dtype = 'auto',
    *,
    flags: Iterable[str] | None = None,
    measure: Callable[[], float] = bf16_gemm_speedup,
    blocked: Callable[[], str | None] = amx_blocked,
) -> PrecisionChoice:
    """The dtype for CPU inference (or mixed-precision training) of PVT.

    Args:
        requested: ``'auto'`` (choose by the hardware), or a dtype (``torch.bfloat16``,
            ``'bfloat16'``/``'bf16'``, ``torch.float32``, ``'float32'``/``'fp32'``), which is
            honoured as asked.
        flags: the CPU's feature flags; read from ``/proc/cpuinfo`` when None.
        measure: returns the bf16/fp32 GEMM speed ratio; called only where the CPU has no AMX
            that oneDNN can use (see ``blocked``) and either has bf16 vector instructions (for
            ``'auto'``) or bf16 is requested (to say in the log what it costs).
        blocked: why AMX is out of oneDNN's reach here, or None (:func:`amx_blocked`); asked
            only where the flags have AMX.

    Returns:
        ``auto``: bf16 with usable AMX; else bf16 only if ``measure()`` is at least
        :data:`MIN_GEMM_SPEEDUP`, else fp32 (also on a CPU without any bf16 instruction).
        A requested bf16 is honoured; without usable AMX its reason gives the measured GEMM
        ratio, and below :data:`MIN_GEMM_SPEEDUP` the choice is marked ``slower`` (on a Zen 1
        EPYC with AVX2 only, oneDNN emulates bf16: a 512³ GEMM ran 0.02× fp32's speed).
    """
    dtype = requested_cpu_dtype(requested)
    if dtype == torch.float32:
        return PrecisionChoice(dtype, 'as requested')
    flags = set(cpu_flags() if flags is None else flags)
    vector = sorted(BF16_VECTOR_FLAGS & flags)
    if flags >= AMX_FLAGS:
        why = blocked()
        if why is None:
            amx = 'the CPU has AMX (amx_bf16, amx_tile): bf16 matrix products'
            return PrecisionChoice(torch.bfloat16, amx if dtype is None else f'as requested; {amx}')
        premise = f'the CPU has AMX but {why}'
    elif vector:
        premise = f'no AMX, {", ".join(vector)} only'
    else:
        premise = 'the CPU has no bf16 matrix unit (no amx_bf16) nor bf16 instructions'
        if dtype is None:
            return PrecisionChoice(torch.float32, premise)
        premise += ', so oneDNN emulates bf16'
    speedup = measure()
    pays = speedup >= MIN_GEMM_SPEEDUP
    measured = f'a bf16 GEMM measured {speedup:.2f}× fp32'
    if dtype is not None:
        if pays:
            return PrecisionChoice(dtype, f'as requested; {premise}: {measured}')
        reason = f'as requested, though {premise}: {measured}, so expect it slower than fp32 (auto would choose fp32)'
        return PrecisionChoice(dtype, reason, slower=True)
    verdict = 'at least' if pays else 'below'
    reason = f'{premise}: {measured}, {verdict} the {MIN_GEMM_SPEEDUP:g}× that bf16 needs to pay'
    return PrecisionChoice(torch.bfloat16 if pays else torch.float32, reason)
