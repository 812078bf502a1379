"""Whatever it is given, ``ublk-bindings-gen`` answers in one line per problem, never a traceback.

Every failure is ``ublk-bindings-gen: FILE[:LINE]: error: ...`` (argparse's usage line for bad
arguments), exit status 1, and leaves no output file, old or half-written, behind.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from codegen_support import BUNDLED, UBLK_HEADERS, load_generated
from ublk_bindings_codegen import cli
from ublk_bindings_codegen.cli import main

TYPES = "#include <linux/types.h>\n"


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run the CLI, expect exit 1 and only well-formed error lines; return stderr."""
    assert main(list(argv)) == 1
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert lines and all(line.startswith("ublk-bindings-gen: ") for line in lines), err
    assert "Traceback" not in err
    return err


def generate_into(tmp_path: Path, header_text: bytes | str) -> tuple[Path, Path]:
    header = tmp_path / "t.h"
    if isinstance(header_text, str):
        header.write_text(header_text)
    else:
        header.write_bytes(header_text)
    return header, tmp_path / "out.py"


def test_bytes_that_are_not_utf8_outside_comments_are_refused_at_their_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    header, out = generate_into(tmp_path, TYPES.encode() + b"struct s {\n\t__u32 caf\xe9;\n};\n")
    err = refused(capsys, "--header", str(header), "--output", str(out))
    assert f"{header}:3: error: byte 0xe9 is not UTF-8" in err
    assert not out.exists()


def test_bytes_that_are_not_utf8_in_comments_are_fine(tmp_path: Path) -> None:
    header, _ = generate_into(tmp_path, TYPES.encode()
                              + b"/* caf\xe9, latin-1 */\nstruct s {\n\t__u32 a;\n};\n")
    assert load_generated(header, tmp_path).s.a.offset == 0


def test_a_binary_file_is_refused_in_one_line(tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    header, out = generate_into(tmp_path, bytes(range(256)) * 4)
    err = refused(capsys, "--header", str(header), "--output", str(out))
    assert len(err.splitlines()) == 1 and f"{header}:" in err


def test_a_header_that_ends_inside_a_definition_is_refused_at_its_last_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    header, out = generate_into(tmp_path, TYPES + "struct s {\n\t__u32 a;\n")
    err = refused(capsys, "--header", str(header), "--output", str(out))
    assert f"{header}:3: error: C syntax error: the header ends inside a definition" in err


@pytest.mark.parametrize("text", ["", "/* nothing here */\n", TYPES])
def test_an_empty_header_has_no_definitions(text: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    header, out = generate_into(tmp_path, text)
    err = refused(capsys, "--header", str(header), "--output", str(out))
    assert f"{header}: error: no definitions" in err


def test_a_directory_given_as_header_is_named_so(tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    err = refused(capsys, "--header", str(tmp_path), "--output", str(tmp_path / "out.py"))
    assert f"{tmp_path}: error: is a directory, not a header" in err
    err = refused(capsys, "--header", str(tmp_path / "none.h"), "--output",
                  str(tmp_path / "out.py"))
    assert f"{tmp_path / 'none.h'}: error: no such header" in err


def test_an_output_that_cannot_be_a_file_is_refused_before_any_work(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    header = str(BUNDLED["ublk_cmd.h"])
    err = refused(capsys, "--header", header, "--output", str(tmp_path / "no" / "out.py"))
    assert f"{tmp_path / 'no' / 'out.py'}: error: directory {tmp_path / 'no'} does not exist" in err
    err = refused(capsys, "--header", header, "--output", str(tmp_path))
    assert f"{tmp_path}: error: --output is a directory" in err
    assert list(tmp_path.iterdir()) == []


def test_a_failed_run_keeps_the_previous_module_and_leaves_no_temporary_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    header, out = generate_into(tmp_path, TYPES + "struct s {\n\tchar *p;\n};\n")
    out.write_text("previous = 1\n")
    refused(capsys, "--header", str(header), "--output", str(out))
    assert out.read_text() == "previous = 1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.py", "t.h"]


def test_the_module_is_written_whole_by_a_rename(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    renames: list[tuple[str, str]] = []
    real_replace = cli.os.replace

    def replace(src: str, dst: str) -> None:
        renames.append((Path(src).name, Path(dst).name))
        real_replace(src, dst)

    monkeypatch.setattr(cli.os, "replace", replace)
    out = tmp_path / "ublk_cmd.py"
    assert main(["--header", str(BUNDLED["ublk_cmd.h"]), "--output", str(out)]) == 0
    [(temporary, final)] = renames
    assert temporary.startswith(".ublk_cmd.py.") and final == "ublk_cmd.py"
    assert out.stat().st_mode & 0o777 != 0o600  # not mkstemp's private mode


def test_check_of_a_file_that_is_not_utf8_is_refused(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    module = tmp_path / "m.py"
    module.write_bytes(b"# ok\n\xff\xfe\n")
    err = refused(capsys, "--check", str(module))
    assert f"{module}:2: error: not a generated module (bytes that are not UTF-8)" in err


def test_check_finds_a_header_whose_path_has_a_space(tmp_path: Path) -> None:
    directory = tmp_path / "my headers"
    directory.mkdir()
    header = directory / "ublk_cmd.h"
    shutil.copy(UBLK_HEADERS["6.1"], header)
    module = tmp_path / "out" / "ublk_cmd.py"
    module.parent.mkdir()
    assert main(["--header", str(header), "--output", str(module)]) == 0
    assert "where <header> is ../my headers/ublk_cmd.h relative" in module.read_text()
    assert main(["--check", str(module)]) == 0


def test_an_unforeseen_exception_is_still_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from ublk_bindings_codegen import generate

    def broken(*args: object, **kwargs: object) -> str:
        raise KeyError("surprise")

    monkeypatch.setattr(generate, "generate", broken)
    header = str(BUNDLED["ublk_cmd.h"])
    err = refused(capsys, "--header", header, "--output", str(tmp_path / "out.py"))
    assert f"{header}: error: internal error, please report it" in err and "KeyError" in err


@pytest.mark.parametrize("argv", [[], ["--check", "a.py", "--output", "b.py"],
                                  ["--output", "b.py"]])
def test_bad_arguments_are_one_usage_error(argv: list[str],
                                           capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit:
        main(argv)
    assert exit.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1].startswith("ublk-bindings-gen: error: ")


def test_old_style_parameter_declarations_are_refused_as_gcc_does(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    header, out = generate_into(tmp_path, TYPES + (
        "static inline __u32 f(__u32 x)\nstruct s { __u32 a; };\n{\n\treturn x;\n}\n"))
    err = refused(capsys, "--header", str(header), "--output", str(out))
    assert f"{header}:3: error: declarations between f()'s parameter list and its body" in err
