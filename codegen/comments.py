"""C comments of the header files, by line, for docstrings (cpp discards them)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

# Control characters (NUL, CR, ...) cannot or should not appear in generated source.
_PRINTABLE = {c: "\ufffd" for c in [*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F]}
_TOKEN = re.compile(r'/\*.*?\*/|//[^\n]*|"(?:[^"\\\n]|\\.)*"|\'(?:[^\'\\\n]|\\.)*\'', re.S)


@dataclass(frozen=True)
class Comment:
    first: int  # 1-based line of "/*"
    last: int  # line of "*/"
    text: str  # cleaned: no comment markers, no leading " * ", dedented
    trailing: bool  # code precedes it on its first line (a member's "/* ... */")


class Comments:
    """Lookup of the comment that documents the definition on a given line of one file."""

    def __init__(self, source: str) -> None:
        self._by_last: dict[int, Comment] = {}
        self._trailing: dict[int, Comment] = {}
        for comment in scan(source):
            if comment.trailing:
                self._trailing.setdefault(comment.first, comment)
            else:
                self._by_last[comment.last] = comment

    @classmethod
    def of_file(cls, path: str) -> Comments:
        """Any encoding, any line ending: comment text only ever becomes docstrings."""
        text = Path(path).read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
        return cls(text.translate(_PRINTABLE))

    def for_line(self, line: int) -> str | None:
        """The trailing comment on ``line``, else the comment block ending just above it."""
        comment = self._trailing.get(line) or self._by_last.get(line - 1)
        return comment.text if comment and comment.text else None

    def above(self, line: int) -> str | None:
        """Only the comment block ending just above ``line`` (a group heading)."""
        comment = self._by_last.get(line - 1)
        return comment.text if comment and comment.text else None


def scan(source: str) -> list[Comment]:
    """Every comment in ``source`` with its line span (string literals are skipped)."""
    comments = []
    for match in _TOKEN.finditer(source):
        token = match.group(0)
        if token[0] in "\"'":
            continue
        first = source.count("\n", 0, match.start()) + 1
        line_start = source.rfind("\n", 0, match.start()) + 1
        trailing = source[line_start : match.start()].strip() != ""
        comments.append(Comment(first, first + token.count("\n"), clean(token), trailing))
    return comments


def clean(token: str) -> str:
    """Comment text without ``/*``, ``*/``, ``//`` and the leading `` * `` of each line."""
    body = token[2:-2] if token.startswith("/*") else token[2:]
    lines = [re.sub(r"^\s*\*(?!/) ?", "", line) for line in body.split("\n")]
    lines = [line.rstrip() for line in lines]
    while lines and not lines[0].strip():
        lines.pop(0)
    while lines and not lines[-1].strip():
        lines.pop()
    indent = min((len(line) - len(line.lstrip()) for line in lines if line.strip()),
                 default=0)
    return "\n".join(line[indent:] for line in lines)
