"""The SPEC grammar of ``ublk-gadget serve --device TARGET[,key=value...]``."""

from __future__ import annotations

import pytest

from ublk_gadget.spec import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_DEPTH,
    DEFAULT_QUEUES,
    DeviceSpec,
    SpecError,
    parse_size,
    parse_spec,
)


@pytest.mark.parametrize(
    ("text", "size"),
    [("512", 512), ("4K", 4096), ("4k", 4096), ("3M", 3 << 20), ("2G", 2 << 30), ("1T", 1 << 40),
     (" 8K ", 8192)],
)
def test_sizes_are_bytes_with_binary_suffixes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("text", ["", "K", "-1", "1.5M", "1P", "1KB", "0x10", "ten"])
def test_a_size_that_is_not_a_number_is_rejected(text: str) -> None:
    with pytest.raises(ValueError, match="is not a size"):
        parse_size(text)


def test_defaults_fill_what_the_spec_leaves_out() -> None:
    assert parse_spec("mem,size=256M") == DeviceSpec(
        target="mem", size=256 << 20, queues=DEFAULT_QUEUES, depth=DEFAULT_DEPTH,
        block_size=DEFAULT_BLOCK_SIZE, read_only=False,
    )


def test_every_key_is_understood() -> None:
    spec = parse_spec("file,path=/tmp/disk.img,size=1G,queues=4,depth=128,block_size=4096,read_only=1")
    assert spec == DeviceSpec(target="file", path="/tmp/disk.img", size=1 << 30, queues=4,
                              depth=128, block_size=4096, read_only=True)


def test_a_file_target_may_leave_its_size_to_the_file() -> None:
    assert parse_spec("file,path=/dev/sdb").size is None


def test_the_canonical_text_parses_back_to_the_same_spec() -> None:
    for text in ("null,size=1T", "mem,size=64M,queues=2,depth=1,block_size=4096",
                 "file,path=/x,read_only=1", "file,path=/x,size=8K"):
        spec = parse_spec(text)
        assert parse_spec(str(spec)) == spec


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "unknown target ''"),
        ("disk,size=1M", "unknown target 'disk'"),
        ("mem,size=1M,colour=blue", "unknown key 'colour' for target mem"),
        ("mem,size=1M,path=/tmp/x", "unknown key 'path' for target mem"),
        ("mem,size=1M,queues", "'queues' is not key=value"),
        ("mem,size=1M,,", "'' is not key=value"),
        ("mem,size=1M,size=2M", "key 'size' given twice"),
        ("mem", "target mem needs size="),
        ("null,depth=4", "target null needs size="),
        ("file,size=1M", "target file needs path="),
        ("file,path=", "target file needs path="),
        ("mem,size=1000", "size=1000 is not a multiple of the block size 512"),
        ("mem,size=6K,block_size=4096", "size=6144 is not a multiple of the block size 4096"),
        ("mem,size=0", "size=0"),
        ("mem,size=lots", "'lots' is not a size"),
        ("mem,size=1M,block_size=1024", "block_size=1024 is not one of"),
        ("mem,size=1M,depth=4097", r"depth=4097 is out of range 1\.\.4096"),
        ("mem,size=1M,depth=0", r"depth=0 is out of range 1\.\.4096"),
        ("mem,size=1M,queues=0", r"queues=0 is out of range"),
        ("mem,size=1M,queues=two", "queues='two' is not a whole number"),
        ("mem,size=1M,read_only=yes", "read_only='yes' is not 0 or 1"),
    ],
)
def test_bad_specs_are_rejected_naming_the_spec_and_the_problem(text: str, problem: str) -> None:
    with pytest.raises(SpecError, match=problem) as caught:
        parse_spec(text)
    assert str(caught.value).startswith(f"--device {text!r}: ")


def test_the_largest_queue_depth_is_accepted() -> None:
    assert parse_spec("null,size=1M,depth=4096").depth == 4096
