"""Every ``zkv`` command that README.md and docs/ show is one the CLI accepts: the subcommand
exists and each ``--option`` is one of its options.  Docs drift; this keeps them honest."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import typer.main

from zkv.cli import app

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# `zkv ...` in inline code, or a line of a code block (after an optional `$ ` prompt)
INLINE = re.compile(r"`(?:\.venv/bin/)?zkv ([^`]+)`")
BLOCK_LINE = re.compile(r"^(?:\$ )?(?:\.venv/bin/)?zkv ([a-z].*)$")


def shown_commands() -> list[tuple[str, str]]:
    """(page, command line after ``zkv``) for every command the pages show."""
    out = []
    for page in PAGES:
        in_block = False
        for line in page.read_text().splitlines():
            if line.startswith("```"):
                in_block = not in_block
                continue
            if in_block:
                for part in re.split(r"\s{3,}", line.strip()):  # side-by-side columns
                    m = BLOCK_LINE.match(part)
                    if m:
                        out.append((page.name, m.group(1).split(" #")[0]))
            else:
                out += [(page.name, m.group(1)) for m in INLINE.finditer(line)]
    return out


def test_every_zkv_command_in_the_docs_is_accepted_by_the_cli() -> None:
    group = typer.main.get_command(app)
    commands = group.commands  # type: ignore[attr-defined]
    shown = shown_commands()
    assert len(shown) > 20, "the pages show zkv commands; the pattern found too few"
    wrong = []
    for page, text in shown:
        try:
            words = shlex.split(text)
        except ValueError:
            words = text.split()
        if not words or words[0] in ("cluster",):  # ("zkv cluster" is status's table title)
            continue
        names = words[0].rstrip(":").split("/")  # ("zkv status/tail/verify" names three)
        missing = [n for n in names if n not in commands]
        if missing:
            wrong.append(f"{page}: zkv {text}: no command {missing[0]!r}")
            continue
        name = names[0]
        cmd = commands[name]
        opts = {o for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
        for w in words[1:]:
            if w.startswith("--") and w.split("=")[0] not in opts:
                wrong.append(f"{page}: zkv {text}: {name} has no option {w.split('=')[0]}")
    assert not wrong, "\n".join(wrong)
