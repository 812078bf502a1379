"""IntFlag/IntEnum families inferred from name prefixes (no list of prefixes anywhere)."""

from __future__ import annotations

import enum
import re
from pathlib import Path

import pytest

from codegen_support import UBLK_HEADERS, load_generated, model_of


def names_with_prefix(header: Path, prefix: str) -> list[str]:
    return re.findall(rf"^#define\s+({prefix}\w+)\s", header.read_text(), re.M)


@pytest.mark.parametrize("version", UBLK_HEADERS)
@pytest.mark.parametrize("cls, prefix, kind", [
    ("UblkF", "UBLK_F_", enum.IntFlag), ("UblkIoF", "UBLK_IO_F_", enum.IntFlag),
    ("UblkParamType", "UBLK_PARAM_TYPE_", enum.IntFlag), ("UblkAttr", "UBLK_ATTR_", enum.IntFlag),
    ("UblkSDev", "UBLK_S_DEV_", enum.IntEnum), ("UblkIoOp", "UBLK_IO_OP_", enum.IntEnum),
])
def test_issue_families_cover_every_macro_of_their_prefix(
        version: str, cls: str, prefix: str, kind: type, tmp_path: Path) -> None:
    header = UBLK_HEADERS[version]
    module = load_generated(header, tmp_path)
    family = getattr(module, cls)
    assert issubclass(family, kind)
    expected = {name[len(prefix):]: getattr(module, name)
                for name in names_with_prefix(header, prefix)}
    assert {m.name: m.value for m in family} == expected


def test_repr_of_a_feature_mask_names_the_flags() -> None:
    import ublk_bindings as u

    mask = u.UblkF(u.UBLK_F_USER_COPY | u.UBLK_F_ZONED)
    assert repr(mask) == "<UblkF.USER_COPY|ZONED: 384>"
    assert repr(u.UblkIoOp(u.UBLK_IO_OP_ZONE_APPEND)) == "<UblkIoOp.ZONE_APPEND: 13>"
    # Bits this header does not know (a newer kernel's) are kept, not dropped.
    assert int(u.UblkF(1 << 40 | 1)) == 1 << 40 | 1


def test_groups_of_sizes_shifts_and_masks_are_not_families(tmp_path: Path) -> None:
    header = tmp_path / "h.h"
    header.write_text(
        "#define BUF_OFF 0\n#define BUF_BITS 25\n#define BUF_MASK ((1ULL << BUF_BITS) - 1)\n"
        "#define ZC_MASK 0xffffffffULL\n#define ZC_IDX_OFF 32\n#define ZC_IDX_MASK 0xffff\n"
        "#define MODE_A 0\n#define MODE_B 1\n#define MODE_C 2\n"
        "#define FL_X (1U << 0)\n#define FL_Y (1U << 3)\n#define FL_ALL (FL_X | FL_Y)\n")
    families = {f.name: (f.kind, [m for m, _ in f.members]) for f in model_of(header).families}
    assert families == {"Mode": ("IntEnum", ["A", "B", "C"]),
                        "Fl": ("IntFlag", ["X", "Y", "ALL"])}


@pytest.mark.parametrize("name", ["ublk_cmd", "io_uring"])
def test_lazily_built_classes_match_the_ones_type_checkers_read(name: str) -> None:
    """The run-time table and the ``if TYPE_CHECKING:`` classes describe the same enums."""
    import ast
    import importlib

    module = importlib.import_module(f"ublk_bindings.{name}")
    tree = ast.parse(Path(module.__file__ or "").read_text())
    guarded = next(node for node in tree.body if isinstance(node, ast.If)
                   and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING")
    declared = [node for node in guarded.body if isinstance(node, ast.ClassDef)]
    assert declared
    for node in declared:
        built = getattr(module, node.name)
        base = node.bases[0]
        assert isinstance(base, ast.Attribute)
        assert built.__bases__[0] is getattr(enum, base.attr)
        statements = [s for s in node.body if isinstance(s, ast.Assign)]
        expected = {s.targets[0].id: getattr(module, s.value.id)  # type: ignore[attr-defined]
                    for s in statements}
        assert {m: built[m].value for m in expected} == expected
        assert built.__doc__ == ast.get_docstring(node)
        assert getattr(module, node.name) is built  # built once
