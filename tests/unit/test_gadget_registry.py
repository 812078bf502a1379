"""The target registry: one entry per target, and what the parser, --help and the daemon
take from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from ublk_gadget.cli import KEY_HELP, build_parser, spec_help
from ublk_gadget.spec import DEVICE_KEYS, KEYS, TARGET_KEYS, TARGETS, parse_spec
from ublk_gadget.targets import KINDS, TargetError, TargetKind, kind_of, open_target, registry
from ublk_gadget.targets.null import KIND as NULL_KIND


def test_the_parser_knows_the_targets_and_keys_the_registry_lists() -> None:
    assert TARGETS == tuple(KINDS) == ("null", "mem", "file", "nbd")
    for kind in KINDS.values():
        assert set(kind.keys) <= set(TARGET_KEYS), f"{kind.name}: a key DeviceSpec cannot hold"
        assert KEYS[kind.name] == (*kind.keys, *DEVICE_KEYS)
    assert set(KEY_HELP) == {*TARGET_KEYS, *DEVICE_KEYS}, "--help explains every key"


@pytest.mark.parametrize("name", list(KINDS))
def test_each_required_key_is_demanded_by_name(name: str) -> None:
    for key in KINDS[name].required:
        with pytest.raises(ValueError, match=f"target {name} needs {key}="):
            parse_spec(name)


def test_an_entry_requiring_a_key_it_does_not_take_is_refused() -> None:
    with pytest.raises(ValueError, match="required"):
        TargetKind(name="odd", keys=("size",), required=("path",), summary="",
                   has_backing=False, open=NULL_KIND.open, reopen=NULL_KIND.reopen)


def test_a_name_registered_twice_is_refused() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        registry._by_name(NULL_KIND, NULL_KIND)


def test_an_unknown_target_is_a_target_error() -> None:
    with pytest.raises(TargetError, match="unknown target 'disk'"):
        kind_of("disk")


@pytest.mark.parametrize("text", ["null,size=1M", "mem,size=1M", "file,path={disk}"])
def test_open_target_opens_the_kind_the_spec_names(text: str, tmp_path: Path) -> None:
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(1 << 20))
    spec = parse_spec(text.format(disk=disk))
    target = open_target(spec)
    try:
        assert target.kind == spec.target
    finally:
        target.close()


def test_help_lists_every_target_with_its_summary_and_needs() -> None:
    text = spec_help()
    for kind in KINDS.values():
        line = next(ln for ln in text.splitlines() if ln.startswith(f"  {kind.name} "))
        assert kind.summary in line
        assert all(f"{key}=" in line for key in kind.required)
        assert all(detail in text for detail in kind.details)
    assert "  path=P        the file or block device (file)" in text
    assert build_parser().description == (
        "The reference ublk server: null, mem, file and nbd targets on /dev/ublkbN.")
