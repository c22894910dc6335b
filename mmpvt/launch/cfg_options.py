"""``--cfg-options`` values that may be written as in a config: ``[dict(type='LocalVisBackend'), ...]``.

mmengine's ``DictAction`` reads numbers, booleans, strings and lists or tuples of them, but turns
``dict(...)`` into the string ``"dict(...)"``, so a documented override such as
``visualizer.vis_backends=[dict(type='LocalVisBackend'),dict(type='TensorboardVisBackend')]`` set a list of
two strings and failed when the visualizer was built. :class:`CfgOptionsAction` reads a value holding
``dict(`` as a Python literal in which ``dict(key=value, ...)`` calls are allowed (nothing else is
evaluated); every other value goes through ``DictAction`` unchanged.
"""

from __future__ import annotations

import argparse
import ast
from typing import Any

from mmengine.config import DictAction


class _NotALiteralError(ValueError):
    """The text is not a literal of :func:`literal_with_dicts`'s kind."""


def _value(node: ast.AST) -> Any:
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.List | ast.Tuple):
        items = [_value(item) for item in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Dict) and None not in node.keys:
        return {_value(k): _value(v) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        operand = _value(node.operand)
        if isinstance(operand, int | float) and not isinstance(operand, bool):
            return -operand if isinstance(node.op, ast.USub) else operand
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id == 'dict'
        and not node.args
        and all(keyword.arg is not None for keyword in node.keywords)
    ):
        return {keyword.arg: _value(keyword.value) for keyword in node.keywords}
    raise _NotALiteralError(f'{ast.unparse(node)} is not a literal')


def literal_with_dicts(text: str) -> Any:
    """The value of ``text``: a Python literal whose dicts may be written ``dict(key=value)``.

    Raises:
        ValueError: ``text`` is something else (a name, another call, an expression).
    """
    try:
        return _value(ast.parse(text.strip(), mode='eval').body)
    except SyntaxError as err:
        raise ValueError(f'cannot read {text!r}: not Python') from err
    except _NotALiteralError as err:
        raise ValueError(f'cannot read {text!r}: {err}') from err


class CfgOptionsAction(DictAction):
    """mmengine's ``DictAction``, reading ``dict(...)`` in a value as the dict it writes.

    ``key=[dict(type='A'),dict(type='B')]`` gives a list of two dicts; ``key=1``, ``key=a,b``,
    ``key="[(1,2),(3,4)]"`` mean what they mean to ``DictAction``. A value with ``dict(`` that is no
    such literal (an unquoted string inside, say) is a usage error naming the option.
    """

    @staticmethod
    def _parse_iterable(val: str) -> Any:
        if 'dict(' in val:
            return literal_with_dicts(val)
        return DictAction._parse_iterable(val)

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        try:
            super().__call__(parser, namespace, values, option_string)
        except ValueError as err:
            parser.error(
                f'{option_string or "--cfg-options"}: {err}; write a dict as in a config, with quoted strings: '
                'key="[dict(type=\'LocalVisBackend\')]"'
            )
