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
