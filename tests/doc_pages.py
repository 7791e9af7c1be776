"""README.md and the pages of docs/: their text, and the commands their shell blocks show.

Tests that check what the documentation says read it through :func:`docs_text`, so that a section
may move between README and a page of docs/ without a test losing it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHELL_BLOCKS = {"bash", "sh", "shell", "console"}
FENCE = re.compile(r"^```\s*([\w-]*)\s*$")


def doc_files() -> list[Path]:
    """README.md first, then every page of docs/."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def docs_text() -> str:
    """The whole documentation as one text: README.md and docs/*.md."""
    return "\n".join(path.read_text() for path in doc_files())


def code_blocks(path: Path) -> Iterator[tuple[str, int, list[str]]]:
    """Each fenced block of a Markdown file: its language (``""`` when none), the line number of
    its first line of code, and its lines."""
    lang, start, body = None, 0, []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        match = FENCE.match(line)
        if lang is None and match:
            lang, start, body = match.group(1).lower(), number + 1, []
        elif lang is not None and line.strip() == "```":
            yield lang, start, body
            lang = None
        elif lang is not None:
            body.append(line)


@dataclass(frozen=True)
class Command:
    path: Path
    line: int
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def shown_commands() -> list[Command]:
    """Every command line of every shell block in README.md and docs/*.md, with ``\\``
    continuations joined; blank lines and comments are left out."""
    commands = []
    for path in doc_files():
        for lang, start, body in code_blocks(path):
            if lang not in SHELL_BLOCKS:
                continue
            pending, first = "", 0
            for offset, line in enumerate(body):
                stripped = line.strip()
                if not pending and (not stripped or stripped.startswith("#")):
                    continue
                if not pending:
                    first = start + offset
                if stripped.endswith("\\"):
                    pending += stripped[:-1] + " "
                    continue
                commands.append(Command(path, first, " ".join((pending + stripped).split())))
                pending = ""
            assert not pending, f"{path}:{first}: a continuation with no line after it"
    return commands
