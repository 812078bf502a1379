"""demo.guest: a file whose fsync returned must come back byte for byte, or the demo fails."""

from __future__ import annotations

from pathlib import Path

from demo.guest import Written


def test_files_read_back_intact_pass(tmp_path: Path) -> None:
    w = Written()
    w.write(tmp_path / "a.bin", b"alpha" * 1000)
    w.write(tmp_path / "b.bin", b"")
    assert w.check(tmp_path) == []


def test_a_changed_byte_and_a_missing_file_are_both_named(tmp_path: Path) -> None:
    w = Written()
    w.write(tmp_path / "a.bin", b"alpha" * 1000)
    w.write(tmp_path / "b.bin", b"beta")
    data = bytearray((tmp_path / "a.bin").read_bytes())
    data[4096] ^= 1
    (tmp_path / "a.bin").write_bytes(bytes(data))
    (tmp_path / "b.bin").unlink()
    assert w.check(tmp_path) == ["a.bin: content differs", "b.bin: No such file or directory"]
