"""The data plane's goals are computed from the tables' own figures, and say when they are
not measured rather than passing."""

from __future__ import annotations

from bench import goals
from bench.fio import Result


def r(iops: float, cpu: float | None = None) -> Result:
    return Result(iops=iops, bw_bytes=iops * 4096, lat_p50_ns=1000, lat_p99_ns=2000,
                  lat_max_ns=3000, ios=int(iops), server_cpu_us_per_io=cpu)


def by_goal(checks: list[dict[str, object]]) -> dict[str, dict[str, object]]:
    return {str(c["goal"]): c for c in checks}


def test_each_goal_is_judged_on_same_run_ratios() -> None:
    main = {"kublk-null": {"4k-randread-qd32": r(10_000)},
            "gadget-null": {"4k-randread-qd32": r(11_000)},
            "gadget-mem": {"4k-randread-qd32": r(9_000)}}
    disk = {"kublk-loop": {"4k-randread-qd1": r(800), "4k-randread-qd32": r(2_700)},
            "gadget-file": {"4k-randread-qd1": r(1_000), "4k-randread-qd32": r(2_970)}}
    checks = by_goal(goals.checks(main, disk, {}, 0.3))
    assert checks["gadget-null 4k-randread-qd32 >= 1.0x kublk-null"]["met"] is True
    assert checks["gadget-mem 4k-randread-qd32 >= 1.0x kublk-null"]["met"] is False
    assert checks["disk: gadget-file 4k-randread-qd32 >= 1.0x kublk-loop"]["value"] == 1.1
    gain = checks["disk: gadget-file QD32/QD1 gain >= kublk-loop's (4k-randread)"]
    assert gain["met"] is False  # 2.97x against 3.375x: faster, yet it gains less from depth
    assert checks["handover stall < 0.5 s"]["met"] is True


def test_nothing_measured_is_never_met() -> None:
    checks = goals.checks({}, {}, {}, None)
    assert checks and all(c["met"] is None and c["value"] is None for c in checks)


def big(iops: float, cpu: float | None = None) -> dict[str, Result | str]:
    return {"128k-read-qd32": r(iops, cpu)}


def test_zero_copy_is_judged_against_kublk_in_zero_copy() -> None:
    main = {"kublk-null": big(1_500), "gadget-null": big(1_400),
            "kublk-null-autozc": big(12_000), "gadget-null-autozc": big(11_000)}
    c = by_goal(goals.checks(main, {}, {}, None))["gadget-null-autozc 128k-read-qd32 >= 1.0x kublk-null-autozc"]
    assert c["value"] == 11_000 / 12_000 and c["met"] is False  # not against kublk copy (7.3x)


def test_the_file_target_in_zero_copy_meets_the_best_kublk_loop_mode_and_half_of_loop() -> None:
    main = {"loop": big(12_900), "kublk-loop": big(950), "kublk-loop-autozc": big(3_150),
            "gadget-file-autozc": big(6_600)}
    checks = by_goal(goals.checks(main, {}, {}, None))
    best = checks["gadget-file-autozc 128k-read-qd32 >= 1.0x kublk-loop (best mode measured)"]
    assert best["value"] == 6_600 / 3_150 and best["met"] is True
    assert best["against"] == "gadget-file-autozc over kublk-loop-autozc"
    half = checks["gadget-file-autozc 128k-read-qd32 >= 0.5x loop"]
    assert half["value"] == 6_600 / 12_900 and half["met"] is True


def test_the_best_kublk_mode_is_the_best_measured_one() -> None:
    main: dict[str, dict[str, Result | str]] = {
        "kublk-loop": big(950), "kublk-loop-autozc": {"128k-read-qd32": "FioError: EIO"},
        "gadget-file-autozc": big(900)}  # fmt: skip
    c = by_goal(goals.checks(main, {}, {}, None))[
        "gadget-file-autozc 128k-read-qd32 >= 1.0x kublk-loop (best mode measured)"]
    assert c["against"] == "gadget-file-autozc over kublk-loop" and c["met"] is False
    assert goals.best(main, ["kublk-loop", "kublk-loop-autozc"], "128k-read-qd32") == "kublk-loop"
    assert goals.best(main, ["kublk-loop-autozc"], "128k-read-qd32") is None


def test_best_gadget_null_mode_against_best_kublk_null_mode() -> None:
    w = "4k-randread-qd32"
    main: dict[str, dict[str, Result | str]] = {
            "kublk-null": {w: r(12_800)}, "kublk-null-autozc": {w: r(16_600)}, "kublk-null-u": {w: r(8_700)},
            "gadget-null": {w: r(13_100)}, "gadget-null-autozc": {w: r(17_000)},
            "gadget-null-usercopy": {w: "FioError: EIO"}}  # fmt: skip
    c = by_goal(goals.checks(main, {}, {}, None))[
        "gadget-null 4k-randread-qd32 (best gadget mode) >= 1.0x kublk-null (best mode)"]
    assert c["value"] == 17_000 / 16_600 and c["met"] is True
    assert c["against"] == "gadget-null-autozc over kublk-null-autozc"
    # the copy goal stays copy against copy
    assert by_goal(goals.checks(main, {}, {}, None))[
        "gadget-null 4k-randread-qd32 >= 1.0x kublk-null"]["value"] == 13_100 / 12_800


def test_a_mode_goal_without_its_peers_is_not_measured() -> None:
    main = {"kublk-null-autozc": big(12_000), "loop": big(1)}
    checks = goals.mode_checks(main)
    assert len(checks) == 4 and all(c["met"] is None and c["value"] is None for c in checks)
    assert all("against" not in c for c in checks)
