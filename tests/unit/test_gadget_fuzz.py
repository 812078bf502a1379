"""Property-based fuzzing (hypothesis) of the two inputs a user or an attacker controls.

The ``--device`` SPEC text comes from whoever runs the gadget, the ``--state-file`` from
whoever could write it before a successor adopts.  Both parsers promise to refuse anything bad
with one exception type whose message names the input (SpecError naming the SPEC; ValueError
from ``parse_state``; StateError or StateMissing naming the file from ``read_state``), never
with a traceback of another type (IndexError, KeyError, RecursionError, AssertionError...),
and to read back exactly what the gadget itself writes.  Random text and bytes, and valid
inputs with one part mutated, are thrown at both.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Union

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ublk_bindings import UBLK_MAX_NR_QUEUES, UBLK_MAX_QUEUE_DEPTH
from ublk_gadget.backing import Backing
from ublk_gadget.owner import ProcessIdentity
from ublk_gadget.spec import (
    BLOCK_SIZES,
    DEFAULT_RECONNECT_S,
    KEYS,
    MAX_RECONNECT_S,
    MAX_SIZE,
    TARGETS,
    DeviceSpec,
    SpecError,
    parse_spec,
)
from ublk_gadget.targets import KINDS
from ublk_gadget.state import (
    STATE_FORMAT,
    DaemonState,
    DeviceState,
    StateError,
    StateMissing,
    parse_state,
    read_state,
    write_state,
)

#: No deadline (a 100 000-deep JSON array takes a while), no example database left behind.
FUZZ = settings(max_examples=200, deadline=None, database=None)
HUGE = 10**400

# --- what the fuzzers are made of ----------------------------------------------------------

#: Every code point hypothesis can make, lone surrogates included (a JSON "\ud800" decodes
#: to one, and a command line decoded with surrogateescape holds them).
ANY_CHAR = st.characters(exclude_categories=())
ANY_TEXT = st.text(ANY_CHAR, max_size=40)

#: Pieces a SPEC is made of, and look-alikes of them: the Kelvin sign folds to "k", "١" and
#: "１" are digits to int() but not to [0-9], and numbers too long for int() to convert.
SPEC_TOKENS = st.sampled_from(
    ["null", "mem", "file", "nbd", ",", ",", "=", "=", "size", "path", "uri", "reconnect",
     "queues", "depth",
     "block_size", "read_only", "0", "1", "00", "512", "4096", "64", "4K", "K", "k", "M", "m",
     "G", "g", "T", "t", "P", "\u212a", "\u0130", "\u017f", "ß", "١", "１", " ", "\t", "\n",
     "\x00", "\ud800", "é", "-", "+", "0x10", "1_000", "1.5", "/", "/tmp/disk.img",
     "9" * 30, "9" * 4400, "0" * 4400, str(HUGE), str(2**63), str(2**64)]
)
SPEC_SOUP = st.lists(SPEC_TOKENS, max_size=30).map("".join)

#: A value for any key: numbers of every size with any suffix, and odd text.
NUMBER = st.one_of(st.integers(-HUGE, HUGE), st.integers(0, 2**70), st.sampled_from(
    [0, 1, 511, 512, 4096, 2**63 - 1, 2**63, 2**64, HUGE]))
SPEC_VALUES = st.one_of(
    st.builds("{}{}{}".format, st.sampled_from(["", " ", "0", "000"]), NUMBER,
              st.sampled_from(["", "K", "k", "M", "g", "T", "t", "P", "\u212a", " ", "B"])),
    st.sampled_from(["", "9" * 4400, "0" * 4400 + "1", "1" * 4290 + "T", "yes", "0", "1"]),
    ANY_TEXT.filter(lambda t: "," not in t),
    SPEC_SOUP,
)


def _size_text(draw: st.DrawFn, size: int) -> str:
    """``size`` written as the user might: plain, or with a suffix it is a multiple of."""
    forms = [str(size)]
    for suffix, shift in (("K", 10), ("M", 20), ("G", 30), ("T", 40)):
        if size % (1 << shift) == 0:
            forms.append(f"{size >> shift}{draw(st.sampled_from([suffix, suffix.lower()]))}")
    pad = st.sampled_from(["", " ", "\t"])
    return f"{draw(pad)}{draw(st.sampled_from(['', '0', '00']))}{draw(st.sampled_from(forms))}" \
           f"{draw(pad)}"


#: Targets whose size= may be left out: the file's or the export's size.
SIZED_BY_BACKING = ("file", "nbd")

#: A path a SPEC can carry: no comma, nothing strip() would take off, not empty.
SPEC_PATHS = st.text(ANY_CHAR, min_size=1, max_size=30).filter(
    lambda t: "," not in t and t.strip() == t and bool(t))


@st.composite
def device_specs(draw: st.DrawFn, resolved: bool = False) -> DeviceSpec:
    """Any valid DeviceSpec (``resolved``: with its size known, as a state file records it)."""
    target = draw(st.sampled_from(TARGETS))
    block_size = draw(st.sampled_from(BLOCK_SIZES))
    blocks = draw(st.one_of(st.integers(1, 1 << 24), st.integers(1, MAX_SIZE // block_size)))
    size: int | None = blocks * block_size
    if target in SIZED_BY_BACKING and not resolved and draw(st.booleans()):
        size = None
    return DeviceSpec(
        target=target,
        size=size,
        path=draw(SPEC_PATHS) if target == "file" else None,
        uri=draw(SPEC_PATHS) if target == "nbd" else None,
        reconnect=draw(st.integers(0, MAX_RECONNECT_S)) if target == "nbd"
        else DEFAULT_RECONNECT_S,
        queues=draw(st.integers(1, UBLK_MAX_NR_QUEUES)),
        depth=draw(st.integers(1, UBLK_MAX_QUEUE_DEPTH)),
        block_size=block_size,
        read_only=draw(st.booleans()),
    )


@st.composite
def spec_texts(draw: st.DrawFn) -> tuple[DeviceSpec, str, list[str]]:
    """A valid SPEC written any way the grammar allows: keys in any order, defaults left out
    or spelled out, sizes with suffixes, blanks around the pieces.  Returns the spec it means,
    its target text and its ``key=value`` items."""
    spec = draw(device_specs())
    pad = st.sampled_from(["", " ", "\t"])
    items: dict[str, str] = {}
    if spec.path is not None:
        items["path"] = spec.path
    if spec.uri is not None:
        items["uri"] = spec.uri
    if spec.target == "nbd" and (spec.reconnect != DEFAULT_RECONNECT_S or draw(st.booleans())):
        items["reconnect"] = str(spec.reconnect)
    if spec.size is not None:
        items["size"] = _size_text(draw, spec.size)
    for key, value, default in (("queues", spec.queues, 1), ("depth", spec.depth, 64),
                                ("block_size", spec.block_size, 512)):
        if value != default or draw(st.booleans()):
            items[key] = (_size_text(draw, value) if key == "block_size"
                          else f"{draw(st.sampled_from(['', '0']))}{value}")
    if spec.read_only or draw(st.booleans()):
        items["read_only"] = "1" if spec.read_only else "0"
    keys = draw(st.permutations(list(items)))
    texts = [f"{draw(pad)}{k}{draw(pad)}={draw(pad)}{items[k]}{draw(pad)}" for k in keys]
    return spec, f"{draw(pad)}{spec.target}{draw(pad)}", texts


@st.composite
def mutated_items(draw: st.DrawFn, items: list[str]) -> list[str]:
    """``items`` with one thing done wrong, as a user (or a fuzzer) would."""
    items = list(items)
    keys = sorted({k for ks in KEYS.values() for k in ks})
    i = draw(st.integers(0, len(items))) if items else 0
    what = draw(st.sampled_from(["value", "key", "no_eq", "twice", "empty", "insert", "drop"]))
    key, _, value = items[i].partition("=") if i < len(items) else ("", "", "")
    if what == "value" and i < len(items):
        items[i] = f"{key}={draw(SPEC_VALUES)}"
    elif what == "key" and i < len(items):
        items[i] = f"{draw(st.one_of(st.sampled_from(keys), ANY_TEXT, SPEC_SOUP))}={value}"
    elif what == "no_eq" and i < len(items):
        items[i] = items[i].replace("=", "")
    elif what == "twice" and i < len(items):
        items.insert(i, items[i])
    elif what == "empty":
        items.insert(i, draw(st.sampled_from(["", " ", "="])))
    elif what == "drop" and i < len(items):
        del items[i]
    else:
        items.insert(i, f"{draw(st.sampled_from(keys))}={draw(SPEC_VALUES)}")
    return items


def check_spec(text: str) -> DeviceSpec | None:
    """The SPEC contract: a valid DeviceSpec that round-trips, or a SpecError naming ``text``."""
    try:
        spec = parse_spec(text)
    except SpecError as e:
        assert str(e).startswith(f"--device {text!r}: "), str(e)
        return None
    assert spec.target in TARGETS
    assert spec.block_size in BLOCK_SIZES
    assert 1 <= spec.queues <= UBLK_MAX_NR_QUEUES and 1 <= spec.depth <= UBLK_MAX_QUEUE_DEPTH
    if spec.size is None:
        assert spec.target in SIZED_BY_BACKING
    else:
        assert 0 < spec.size <= MAX_SIZE and spec.size % spec.block_size == 0
    assert (spec.path is not None) == (spec.target == "file")
    assert (spec.uri is not None) == (spec.target == "nbd")
    assert parse_spec(str(spec)) == spec
    return spec


# --- the SPEC ----------------------------------------------------------------------------


@FUZZ
@given(st.one_of(ANY_TEXT, st.text(max_size=200), SPEC_SOUP))
def test_any_text_is_a_spec_or_a_spec_error(text: str) -> None:
    check_spec(text)


SPEC_KEYS = st.sampled_from(sorted({k for keys in KEYS.values() for k in keys}))


@settings(FUZZ, max_examples=400)
@given(st.sampled_from(TARGETS), st.dictionaries(SPEC_KEYS, SPEC_VALUES, max_size=6),
       st.lists(st.tuples(st.one_of(SPEC_KEYS, SPEC_TOKENS), SPEC_VALUES), max_size=2))
def test_any_values_of_the_keys_are_a_spec_or_a_spec_error(
    target: str, values: dict[str, str], more: list[tuple[str, str]]
) -> None:
    """Every key with any value; a size and path where missing, so that the values (not the
    missing keys) are what is judged; and maybe a key given twice or an unknown one."""
    values = {"size": "1M", "path": "/x", "uri": "nbd://x/"} | values
    if target != "file":
        values.pop("path")
    if target != "nbd":
        values.pop("uri")
    check_spec(",".join([target, *(f"{k}={v}" for k, v in [*values.items(), *more])]))


@FUZZ
@given(spec_texts())
def test_a_valid_spec_parses_to_what_it_says_and_back(
    case: tuple[DeviceSpec, str, list[str]]
) -> None:
    spec, target, items = case
    text = ",".join([target, *items])
    assert parse_spec(text) == spec
    assert parse_spec(str(spec)) == spec
    assert str(parse_spec(str(spec))) == str(spec)  # the canonical text is a fixed point


@FUZZ
@given(st.data())
def test_a_valid_spec_with_one_mistake_is_a_spec_or_a_spec_error(data: st.DataObject) -> None:
    _, target, items = data.draw(spec_texts())
    if data.draw(st.booleans()):
        target = data.draw(st.one_of(st.sampled_from(TARGETS), SPEC_SOUP, ANY_TEXT))
    check_spec(",".join([target, *data.draw(mutated_items(items))]))


@pytest.mark.parametrize("text", [
    # KELVIN SIGN: Unicode re.IGNORECASE matched it as a "k", but its .upper() is itself, not
    # a key of _SUFFIX: KeyError
    "null,size=1\u212a",
    "mem,size=4\u212a,block_size=4\u212a",
    "null,size=1M,block_size=4\u212a",
])
def test_regression_a_kelvin_sign_is_not_a_k_suffix(text: str) -> None:
    with pytest.raises(SpecError, match="is not a size") as raised:
        parse_spec(text)
    assert str(raised.value).startswith(f"--device {text!r}: ")


@pytest.mark.parametrize("size", [
    "1" * 4290 + "T",  # parsed to a 4303-digit size whose str() raised ValueError
    "9" * 4400,  # int() refused it: "Exceeds the limit (4300 digits)"
    str(HUGE),
    str(2**63),
    "8589934592G",  # 2**63 bytes
])
def test_regression_a_size_beyond_what_linux_serves_is_refused(size: str) -> None:
    text = f"null,size={size}"
    with pytest.raises(SpecError, match=r"is too large \(at most 9223372036854775807 bytes\)") \
            as raised:
        parse_spec(text)
    assert str(raised.value).startswith(f"--device {text!r}: ")


@pytest.mark.parametrize("key", ["queues", "depth"])
def test_regression_a_count_too_long_for_int_is_out_of_range_naming_the_key(key: str) -> None:
    # int() refused it with "Exceeds the limit (4300 digits) for integer string conversion".
    with pytest.raises(SpecError, match=f"{key}=9{{4400}} is out of range 1"):
        parse_spec(f"null,size=1M,{key}={'9' * 4400}")
    assert getattr(parse_spec(f"null,size=1M,{key}={'0' * 4400}1"), key) == 1


def test_the_largest_size_is_served_and_written_back() -> None:
    spec = parse_spec(f"null,size={MAX_SIZE - MAX_SIZE % 4096},block_size=4K")
    assert spec.size == (1 << 63) - 4096 and parse_spec(str(spec)) == spec
    assert parse_spec("null,size=" + "0" * 4400 + "512").size == 512  # leading zeros are fine


# --- the state file ----------------------------------------------------------------------

Json = Union[None, bool, int, float, str, list[Any], dict[str, Any]]

JSON_SCALARS: st.SearchStrategy[Json] = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(-HUGE, HUGE),
    st.floats(allow_nan=True, allow_infinity=True), ANY_TEXT,
)
JSON_VALUES: st.SearchStrategy[Json] = st.recursive(
    JSON_SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(ANY_TEXT, inner, max_size=4)),
    max_leaves=12,
)
#: What a field is replaced with: its own type gone wrong (negative, huge, float, bool, empty,
#: nested), the right value of another field, or anything at all.
NASTY: st.SearchStrategy[Json] = st.one_of(
    st.sampled_from([None, True, False, 0, -1, 1, 2, 3, 1.0, 2.0, -0.0, 0.5, 1e300,
                     float("nan"), float("inf"), float("-inf"), 2**63, 2**64, HUGE, -HUGE, "",
                     " ", "\u212a", "\ud800", "null", "mem", "file", "/", "relative", "1",
                     STATE_FORMAT, [], {}, [[[]]], [1], ["x"], {"path": "/x"},
                     "null,size=1M", "file,path=/x", "mem,size=1\u212a", "file,path=/x,size=1M"]),
    JSON_SCALARS, JSON_VALUES,
)

UINT = st.one_of(st.integers(0, 2**64), st.sampled_from([0, HUGE]))
NONEMPTY_TEXT = st.text(ANY_CHAR, min_size=1, max_size=20)


@st.composite
def owners(draw: st.DrawFn) -> ProcessIdentity:
    return ProcessIdentity(pid=draw(UINT), start_time=draw(UINT), boot_id=draw(NONEMPTY_TEXT),
                           exe=draw(NONEMPTY_TEXT),
                           cmdline=tuple(draw(st.lists(ANY_TEXT, max_size=4))))


@st.composite
def devices(draw: st.DrawFn, dev_id: int) -> DeviceState:
    spec = draw(device_specs(resolved=True))
    backing = None
    if KINDS[spec.target].has_backing:
        backing = Backing(path="/" + draw(ANY_TEXT), dev=draw(UINT), ino=draw(UINT))
    return DeviceState.of(dev_id, spec, flags=draw(UINT), backing=backing)


@st.composite
def states(draw: st.DrawFn) -> DaemonState:
    """A valid state: an owner and a few null, mem and file devices with distinct dev_ids."""
    ids = draw(st.lists(st.one_of(st.integers(0, 64), UINT), unique=True, max_size=4))
    return DaemonState(owner=draw(owners()),
                       devices=tuple(draw(devices(dev_id)) for dev_id in sorted(ids)))


Where = tuple[Union[str, int], ...]


def places(node: Json, where: Where = ()) -> Iterator[Where]:
    """Every value in a JSON tree, by the keys and indices that lead to it."""
    yield where
    if isinstance(node, dict):
        for key, value in node.items():
            yield from places(value, (*where, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from places(value, (*where, index))


@st.composite
def mutated_states(draw: st.DrawFn, replacement: st.SearchStrategy[Json] = NASTY) -> Json:
    """A valid state's JSON with one value, at any depth, replaced, deleted, retyped, wrapped,
    duplicated or given an unknown sibling."""
    data: Json = draw(states()).to_json()
    where = draw(st.sampled_from(list(places(data))))
    what = draw(st.sampled_from(["replace", "replace", "delete", "wrap", "twice", "extra"]))
    if not where:
        return draw(replacement) if what == "replace" else [data]
    parent: Any = data
    for step in where[:-1]:
        parent = parent[step]
    last = where[-1]
    if what == "replace":
        parent[last] = draw(replacement)
    elif what == "delete":
        del parent[last]
    elif what == "wrap":
        parent[last] = [parent[last]]
    elif what == "twice" and isinstance(parent, list) and isinstance(last, int):
        parent.insert(last, copy.deepcopy(parent[last]))
    elif isinstance(parent, dict):
        parent[draw(ANY_TEXT)] = draw(replacement)
    else:
        parent.append(draw(replacement))
    return data


def check_parse_state(data: Json) -> DaemonState | None:
    """The parse_state contract: a DaemonState, or a ValueError (StateForeign is one)."""
    try:
        state = parse_state(data)
    except ValueError:
        return None
    assert isinstance(state, DaemonState)
    assert parse_state(state.to_json()) == state
    return state


@pytest.fixture(scope="module")
def private_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory only we can write, so read_state trusts the files in it."""
    directory = tmp_path_factory.mktemp("fuzz-state")
    directory.chmod(0o700)
    return directory


def write_private(path: Path, raw: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(raw)
    path.chmod(0o600)


def check_read_state(path: Path, raw: bytes) -> DaemonState | None:
    """The read_state contract: a DaemonState that writes back and reads the same, or a
    StateError (StateMissing is one) whose message begins with the path."""
    write_private(path, raw)
    try:
        state = read_state(str(path))
    except StateError as e:
        assert str(e).startswith(f"{path}: "), str(e)
        return None
    assert isinstance(state, DaemonState)
    write_state(str(path), state)
    assert read_state(str(path)) == state
    return state


def dump(data: Json) -> bytes:
    return json.dumps(data).encode()


@FUZZ
@given(JSON_VALUES)
def test_any_json_is_a_state_or_a_value_error(data: Json) -> None:
    check_parse_state(data)


@FUZZ
@given(st.dictionaries(st.sampled_from(["format", "version", "owner", "devices", "x"]),
                       NASTY, max_size=5),
       st.sampled_from([1, 2, 1.0, 2.0, True, "2", None, 3]))
def test_any_json_claiming_the_format_is_a_state_or_a_value_error(
    data: dict[str, Any], version: Json
) -> None:
    check_parse_state({**data, "format": STATE_FORMAT, "version": version})


@FUZZ
@given(mutated_states())
def test_a_valid_state_with_one_field_wrong_is_a_state_or_a_value_error(data: Json) -> None:
    check_parse_state(data)


@settings(FUZZ, max_examples=100)  # two fsyncs an example
@given(states())
def test_a_valid_state_round_trips_through_the_file(private_dir: Path, state: DaemonState) -> None:
    path = private_dir / "state.json"
    write_state(str(path), state)
    assert read_state(str(path)) == state
    assert parse_state(state.to_json()) == state
    assert parse_state(state.to_json() | {"version": 1}) == state  # a version 1 file may too


#: Raw JSON a json.dumps of a valid state never holds: Python's json reads NaN and Infinity,
#: numbers too long for int(), and arrays nested deeper than the recursion limit.
RAW_TOKENS = st.sampled_from(
    [b"NaN", b"Infinity", b"-Infinity", b"-0", b"1e400", b"1.0", b"2.0", b"1" * 5000,
     b"-" + b"9" * 5000, b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 100_000,
     b"[" * 990 + b"]" * 990, b"[" * 100_000, b'"\\ud800"', b'"\\u0000"', b"\xff", b"",
     b'"caf\xc3\xa9"', b"\xed\xa0\x80"])
SENTINEL = "\x00fuzz-sentinel\x00"


@FUZZ
@given(mutated_states(replacement=st.just(SENTINEL)), RAW_TOKENS)
def test_a_state_file_with_one_raw_token_is_a_state_or_a_state_error(
    private_dir: Path, data: Json, token: bytes
) -> None:
    raw = dump(data).replace(json.dumps(SENTINEL).encode(), token)
    check_read_state(private_dir / "state.json", raw)


@FUZZ
@given(mutated_states())
def test_a_state_file_with_one_field_wrong_is_a_state_or_a_state_error(
    private_dir: Path, data: Json
) -> None:
    check_read_state(private_dir / "state.json", dump(data))


@settings(FUZZ, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(st.binary(max_size=200),
                 st.builds(lambda state, cut: dump(state.to_json())[:cut], states(),
                           st.integers(0, 400)),
                 st.builds(lambda state, at, byte: bytes_with(dump(state.to_json()), at, byte),
                           states(), st.integers(0, 400), st.integers(0, 255))))
def test_any_bytes_are_a_state_or_a_state_error(private_dir: Path, raw: bytes) -> None:
    check_read_state(private_dir / "state.json", raw)


def bytes_with(raw: bytes, at: int, byte: int) -> bytes:
    """``raw`` with one byte overwritten (or appended past its end)."""
    at = min(at, len(raw))
    return raw[:at] + bytes([byte]) + raw[at + 1:]


def test_a_missing_state_file_is_state_missing_naming_it(private_dir: Path) -> None:
    path = private_dir / "absent.json"
    with pytest.raises(StateMissing, match="no state file") as raised:
        read_state(str(path))
    assert str(raised.value).startswith(f"{path}: ")


# --- regressions the fuzzing found -------------------------------------------------------


def valid_json() -> dict[str, Any]:
    owner = ProcessIdentity(pid=1, start_time=2, boot_id="b", exe="/e", cmdline=("e",))
    device = DeviceState.of(0, parse_spec("null,size=1M"), flags=0)
    return DaemonState(owner=owner, devices=(device,)).to_json()


@pytest.mark.parametrize("version", [1.0, 2.0])
def test_regression_a_float_version_is_foreign_not_an_assertion(version: float) -> None:
    # 1.0 in (1, 2) is True: the version check let it through to ``assert isinstance(int)``.
    with pytest.raises(ValueError, match=f"state version {version} is not supported"):
        parse_state(valid_json() | {"version": version})


@pytest.mark.parametrize(("raw", "message"), [
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),  # RecursionError from json
    (b'{"a":' * 100_000, "nested too deeply"),
    (b'{"format": "ublk-gadget-state", "version": ' + b"1" * 5000 + b"}",
     "a number with too many digits"),  # int() refuses more than 4300 digits
])
def test_regression_json_python_cannot_decode_is_a_state_error(
    private_dir: Path, raw: bytes, message: str
) -> None:
    path = private_dir / "state.json"
    write_private(path, raw)
    with pytest.raises(StateError, match=message) as raised:
        read_state(str(path))
    assert str(raised.value).startswith(f"{path}: corrupt state file")


def nested(depth: int) -> list[Any]:
    root: list[Any] = []
    inner = root
    for _ in range(depth):
        inner.append([])
        inner = inner[0]
    return root


@pytest.mark.parametrize("change", [
    lambda d: d["owner"].update(cmdline=nested(100_000)),  # repr() in the message recursed
    lambda d: d["owner"].update(pid=nested(100_000)),
    lambda d: d["devices"][0].update(spec=nested(100_000)),
    lambda d: d.update(version=nested(100_000)),
])
def test_regression_a_deeply_nested_field_is_a_value_error(
    change: Callable[[dict[str, Any]], None]
) -> None:
    data = valid_json()
    change(data)
    with pytest.raises(ValueError, match="expected|not supported"):
        parse_state(data)
