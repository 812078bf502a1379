"""Unusual layouts: generated exactly as gcc lays them out on x86-64, or refused at file:line.

Each header of ``tests/fixtures/layout/`` says on its first line what must happen to it
(see the README there).  A generated one is imported and every record checked against gcc
compiling the same header: sizeof, alignment, each member's offset and size, and the bytes
each integer member and bit-field occupies.  A refused one must fail with one
``ublk-bindings-gen: FILE:LINE: error:`` line naming the construct, and write nothing.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from codegen_support import REPO, layout_mismatches, load_generated, requires_gcc
from ublk_bindings_codegen.cli import main

CORPUS = REPO / "tests" / "fixtures" / "layout"
HEADERS = sorted(CORPUS.glob("*.h"))
_EXPECT = re.compile(r"^/\* expect: (generated|refused: (\d+): (.*?)) \*/$")


def expectation(header: Path) -> tuple[int, str] | None:
    """None for "generated", else (line, message part) of the refusal."""
    match = _EXPECT.match(header.read_text().splitlines()[0])
    assert match is not None, f"{header.name}: first line must say what to expect"
    return None if match.group(1) == "generated" else (int(match.group(2)), match.group(3))


GENERATED = [h for h in HEADERS if expectation(h) is None]
REFUSED = [h for h in HEADERS if expectation(h) is not None]


def test_the_corpus_has_both_kinds() -> None:
    assert len(GENERATED) >= 5 and len(REFUSED) >= 5


@requires_gcc
@pytest.mark.parametrize("header", GENERATED, ids=[h.stem for h in GENERATED])
def test_generated_layouts_match_gcc_byte_for_byte(header: Path, tmp_path: Path) -> None:
    assert layout_mismatches(header, tmp_path) == []


@pytest.mark.parametrize("header", REFUSED, ids=[h.stem for h in REFUSED])
def test_refused_layouts_name_file_line_and_construct(
        header: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    expected = expectation(header)
    assert expected is not None
    line, message = expected
    output = tmp_path / "out.py"
    assert main(["--header", str(header), "--output", str(output)]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"ublk-bindings-gen: {header}:{line}: error: "), err
    assert message in err
    assert not output.exists() and list(tmp_path.iterdir()) == []


def test_pragma_pack_follows_push_and_pop(tmp_path: Path) -> None:
    module = load_generated(CORPUS / "pragma_pack.h", tmp_path)
    assert [module.one._pack_, module.two._pack_, module.one_again._pack_,
            module.four._pack_] == [1, 2, 1, 4]
    assert not hasattr(module.natural, "_pack_") and not hasattr(module.natural_again, "_pack_")


def test_reserved_member_names_get_a_trailing_underscore(tmp_path: Path) -> None:
    module = load_generated(CORPUS / "reserved_names.h", tmp_path)
    names = [name for name, *_ in module.reserved._fields_]
    assert names == ["_fields__", "_anonymous__", "_pack__", "_layout__", "from__", "from_",
                     "class_", "from_buffer_", "__init___"]
    r = module.reserved(_fields__=1, from__=2, from_=3, class_=4)
    assert module.reserved_sum(r) == 10  # the helper reads the renamed members


def test_typedef_of_an_anonymous_struct_is_a_class_of_that_name(tmp_path: Path) -> None:
    module = load_generated(CORPUS / "typedef_struct.h", tmp_path)
    assert module.anonymous_t.__name__ == "anonymous_t"
    assert module.first_t is not None and module.second_t is module.first_t
    assert module.tagged_t is module.tagged
    assert {"anonymous_t", "first_t", "second_t", "tagged_t"} <= set(module.__all__)
