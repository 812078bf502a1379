"""Publish a benchmark run: its record and picture into ``bench/results/``, its table into the
README between two markers, so the README always shows a run's own output, never a retyped one.

    python -m bench.publish        # after python -m bench; make bench does both
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
OUT = REPO / ".out" / "bench"
RESULTS = REPO / "bench" / "results"
README = REPO / "README.md"
START = "<!-- bench-results:start (written by python -m bench.publish) -->"
END = "<!-- bench-results:end -->"
FILES = ("results.json", "results.txt", "handover-latency.png", "nbd/handover-latency.png")


class PublishError(RuntimeError):
    pass


def _placement(env: dict[str, object]) -> str:
    if env.get("fio_cpu") is None:
        return " fio and the servers unpinned."
    return (f" fio pinned to vCPU {env['fio_cpu']}, every userspace server's threads to vCPU "
            f"{env['server_cpu']}.")


def _disk(results: dict[str, object]) -> str:
    """What the disk and shared-CPU tables ran on, when the record has them."""
    text = ""
    d = results.get("disk")
    if isinstance(d, dict) and "device" in d:
        text += (f" The disk table: {d['device']}, a {d['size'] >> 20} MiB virtio-blk disk over a host file "
                 "(cache=none), placed as above.")  # fmt: skip
    s = results.get("shared_cpu")
    if isinstance(s, dict) and "peers" in s:
        text += " The shared-CPU table: fio and the servers unpinned."
    n = results.get("nbd")
    if isinstance(n, dict) and "peers" in n:
        where = " and ".join("TCP on the guest's loopback" if t == "tcp" else "a unix socket" for t in n["transports"])
        cpu = n.get("nbdkit_cpu")
        text += (f" The NBD table: {n['server']}'s memory plugin over {where}, one server for both clients, "
                 f"{'unpinned' if cpu is None else f'pinned to vCPU {cpu}'}.")  # fmt: skip
    return text


def block(results: dict[str, object], table: str, picture: str | None, host: dict[str, float] | None,
          nbd_picture: str | None = None) -> str:
    """The README text between the markers."""
    env = results["environment"]
    assert isinstance(env, dict)
    geometry = env["geometry"]
    load = ""
    if host:
        load = (f" The host ({host['cpus']:g} cores) had a load average of {host['loadavg_1min_before']:.1f} "
                f"before and {host['loadavg_1min_after']:.1f} after the run.")  # fmt: skip
    lines = [
        f"Run of {env['date']} in the test-bed VM: Linux {env['kernel']}, {env['cpus']} vCPUs (qemu TCG), "
        f"{env['fio']}; {env['rounds']} rounds of {env['runtime_s']:g} s (after {env['ramp_s']:g} s ramp) per "
        f"cell, the median round shown; every device {geometry['queues']} queue(s) x {geometry['depth']} tags."
        f"{_placement(env)}{_disk(results)}{load} Record: [`bench/results/results.json`](bench/results/results.json).",
        "",
        "```",
        table.rstrip("\n"),
        "```",
    ]
    if picture:
        lines += ["", f"![I/O latency across gadget handovers]({picture})"]
    if nbd_picture:
        lines += ["", f"![I/O latency across gadget-nbd handovers]({nbd_picture})"]
    return "\n".join(lines)


def publish(out: Path = OUT, results_dir: Path = RESULTS, readme: Path = README) -> None:
    missing = [f for f in FILES[:2] if not (out / f).exists()]
    if missing:
        raise PublishError(f"{out}: no {', '.join(missing)}: run python -m bench first")
    results_dir.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        (results_dir / name).unlink(missing_ok=True)
        if (out / name).exists():
            (results_dir / name).parent.mkdir(exist_ok=True)
            shutil.copyfile(out / name, results_dir / name)
    doc = json.loads((out / "results.json").read_text())
    host = json.loads((out / "host.json").read_text()) if (out / "host.json").exists() else None
    if host:
        shutil.copyfile(out / "host.json", results_dir / "host.json")
    table = (out / "results.txt").read_text().replace(str(out), "bench/results")
    picture, nbd_picture = (f"bench/results/{f}" if (results_dir / f).exists() else None for f in FILES[2:])
    text = readme.read_text()
    if START not in text or END not in text:
        raise PublishError(f"{readme}: no {START!r} ... {END!r} markers to write between")
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    readme.write_text(f"{head}{START}\n{block(doc, table, picture, host, nbd_picture)}\n{END}{tail}")


def main() -> int:
    try:
        publish()
    except PublishError as e:
        print(f"bench.publish: {e}", file=sys.stderr)
        return 1
    print(f"published into {RESULTS} and {README}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
