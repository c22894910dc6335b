"""Every command the README and docs/ show: its tool exists, takes every flag the command gives it, and the
configs it names exist; the documented TensorBoard override builds the visualizer it promises.

The commands are read from the Markdown itself (code blocks and inline code), so a doc that changes is
checked as it is.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from collections import defaultdict

import pytest
from helpers import REPO, TOY_CONFIGS, checkout_env

from mmpvt.launch.config_checks import load_config
from mmpvt.launch.main import train_parser

DOCS = [REPO / 'README.md', *sorted((REPO / 'docs').glob('*.md'))]


def documented_commands() -> dict[str, list[tuple[str, list[str]]]]:
    """tool path -> [(doc, argv after the tool)] for every ``python tools/...`` or ``bash tools/...`` command."""
    found: dict[str, list[tuple[str, list[str]]]] = defaultdict(list)
    for doc in DOCS:
        text = doc.read_text().replace('\\\n', ' ')
        lines, prose, fenced = [], [], False
        for line in text.splitlines():
            if line.lstrip().startswith('```'):
                fenced = not fenced
            elif fenced:
                lines.append(line)  # a code block's line (any language: only commands match below)
            else:
                prose.append(line)
        lines += re.findall(r'`((?:python3?|bash) [^`]*tools/[^`]*)`', ' '.join(prose))
        for line in lines:
            line = re.sub(r'\s+#.*$', '', line).strip()
            match = re.search(r'(?:python3?|bash) (?:-u )?(tools/\S+)(.*)$', line)
            if match:
                found[match.group(1)].append((doc.name, shlex.split(match.group(2))))
    return found


COMMANDS = documented_commands()


def test_the_docs_show_commands_of_the_tools() -> None:
    assert {'tools/train.py', 'tools/test.py', 'tools/demo.py', 'tools/analysis/plot_curves.py'} <= set(COMMANDS)
    assert any('--cfg-options' in argv for _, argv in COMMANDS['tools/train.py'])  # the TensorBoard one


@pytest.mark.parametrize('tool', sorted(COMMANDS))
def test_each_documented_command_matches_its_tool(tool: str) -> None:
    path = REPO / tool
    assert path.is_file(), f'{tool}, shown in {COMMANDS[tool][0][0]}, does not exist'
    configs = [a for _, argv in COMMANDS[tool] for a in argv if a.startswith('configs/')]
    assert all((REPO / c).is_file() for c in configs), [c for c in configs if not (REPO / c).is_file()]
    if path.suffix != '.py':
        return
    result = subprocess.run(
        [sys.executable, str(path), '--help'], capture_output=True, text=True, cwd=REPO, env=checkout_env()
    )
    assert result.returncode == 0, result.stderr[-2000:]
    flags = set(re.findall(r'(--[a-z][a-z0-9-]*)', result.stdout))
    for doc, argv in COMMANDS[tool]:
        used = {a.split('=')[0] for a in argv if a.startswith('--')}
        assert used <= flags, f'{doc}: {tool} {" ".join(argv)}: {sorted(used - flags)} not in its --help'


def test_the_documented_tensorboard_override_gives_dicts() -> None:
    """mmengine's DictAction made ``[dict(type=...)]`` a list of strings; ours reads the dicts."""
    (argv,) = [argv for _, argv in COMMANDS['tools/train.py'] if '--cfg-options' in argv]
    argv = [str(TOY_CONFIGS / 'retinanet_pvt_t_fpn_toy_coco.py') if a == 'CONFIG' else a for a in argv]
    args = train_parser().parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    assert cfg.visualizer.vis_backends == [dict(type='LocalVisBackend'), dict(type='TensorboardVisBackend')]
