"""Errors that name the place in the header and the construct we could not handle."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Location:
    """A place in a C source file, as the user knows it (path as given, 1-based line).

    Line 0 stands for the file as a whole (it does not exist, it is empty, ...).
    """

    file: str
    line: int = 0

    def __str__(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file


class GenError(Exception):
    """A definition the generator cannot turn into Python: ``file:line: construct: why``."""

    def __init__(self, location: Location | None, message: str) -> None:
        self.location = location
        self.message = message
        super().__init__(f"{location}: {message}" if location else message)


class GenErrors(Exception):
    """Every problem found in one run, so a new header is fixed in one pass, not N."""

    def __init__(self, errors: list[GenError]) -> None:
        self.errors = errors
        super().__init__("\n".join(str(e) for e in errors))
