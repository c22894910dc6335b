"""Which mmcv ops a machine needs, which it has, and whether tools/setup_env.sh keeps or replaces them.

Usage: python tools/mmcv_ops_flavour.py {wanted,installed,decide}

A flavour is ``cpu`` or ``cuda<version>`` (the CUDA version torch was built with). A machine needs CUDA ops
when its torch is a CUDA build and a GPU is present (or ``FORCE_CUDA=1``, for building on a machine without
one). An mmcv whose ops lack what the machine needs (CPU-only ops beside a CUDA torch and a GPU, or ops built for
another CUDA version) is replaced; CUDA ops on a machine that needs only CPU ones are kept (they hold the CPU
kernels too). ``decide`` prints the decision (``keep``, ``replace`` or ``install`` where no mmcv with ops is
there), the flavour wanted and the one installed (``none``), on one line: one import of torch and mmcv for all.
"""

from __future__ import annotations

import os
import sys


def wanted() -> str:
    import torch

    cuda = torch.version.cuda
    needs_cuda = cuda and (torch.cuda.is_available() or os.environ.get('FORCE_CUDA') == '1')
    return f'cuda{cuda}' if needs_cuda else 'cpu'


def installed() -> str | None:
    """The installed mmcv's flavour, or None when it has no compiled ops (or none is installed)."""
    try:
        import torch  # noqa: F401  (the ops link against torch's libraries)
        from mmcv.ops import get_compiling_cuda_version
    except Exception:
        return None
    version = get_compiling_cuda_version()
    return 'cpu' if version == 'not available' else f'cuda{version}'


def decide(have: str | None, want: str) -> str:
    if have is None:
        return 'install'
    if have == want or want == 'cpu':
        return 'keep'
    return 'replace'


def main(argv: list[str]) -> int:
    if argv not in (['wanted'], ['installed'], ['decide']):
        print(__doc__.split('\n\n')[1], file=sys.stderr)
        return 2
    if argv == ['wanted']:
        print(wanted())
    elif argv == ['installed']:
        print(installed() or 'none')
    else:
        have, want = installed(), wanted()
        print(decide(have, want), want, have or 'none')
    return 0


if __name__ == '__main__':
    sys.exit(main(sys.argv[1:]))
