"""The one entry wrapper of mmpvt's command-line tools: a user's mistake ends in one ``error:`` line.

Every tool under ``tools/`` runs its ``main`` through :func:`run_tool`, so that a mistake the tool
recognises (a :class:`~mmpvt.launch.ConfigError`: a missing file, a wrong option, a checkpoint of
another model) prints ``error: <what is wrong and how to fix it>`` on stderr and exits with status 1,
without a traceback, the same for ``train.py``, ``test.py``, the demo, the export and the analysis
tools. Anything else is a bug and keeps its traceback. argparse's own usage errors keep argparse's
form and status 2, as for every OpenMMLab tool.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

from . import ConfigError

#: Exit status of a tool stopped by a :class:`ConfigError`.
ERROR_STATUS = 1


def run_tool(main: Callable[[], Any], *errors: type[Exception]) -> NoReturn:
    """Run a tool's ``main`` and exit: its status (an int it returns, else 0), or 1 with ``error: ...``.

    Args:
        main: the tool's entry point.
        errors: more exception types whose message is for the user (``train.py``: a diverged run's
            ``NonFiniteError``), printed and ended like a :class:`ConfigError`. ``SystemExit`` (argparse's
            usage errors, a run stopped by a signal with status 75) passes through.
    """
    try:
        result = main()
    except (ConfigError, *errors) as err:
        sys.stdout.flush()
        print(f'error: {err}', file=sys.stderr)
        sys.exit(ERROR_STATUS)
    sys.exit(result if isinstance(result, int) and not isinstance(result, bool) else 0)


@contextmanager
def user_error(prefix: str, *kinds: type[Exception]) -> Iterator[None]:
    """Turn the exceptions ``kinds`` (default ``ValueError``) raised inside into ``ConfigError(prefix: message)``.

    For calls whose ``ValueError`` means the user's input is wrong (a query outside the image, an input
    smaller than the model allows, a checkpoint that does not fit), not a bug.
    """
    caught = kinds or (ValueError,)
    try:
        yield
    except ConfigError:
        raise
    except caught as err:
        raise ConfigError(f'{prefix}: {err}' if prefix else str(err)) from err
