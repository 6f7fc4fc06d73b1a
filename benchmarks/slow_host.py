"""Runs a command on an emulated slower host: this machine's cores under a CPU quota.

    python benchmarks/slow_host.py --factor 3 -- python benchmarks/serve_bench.py --seconds 5
    python benchmarks/slow_host.py --factor 3 -- python benchmarks/epoch_bench.py

The command and every process it starts (Ray's, the servers', the load generator) run in a
cgroup of their own whose CPU time is capped at cores / factor per scheduling period, so
the same work takes about `factor` times as long, as on a host of the same core count
whose cores are that much slower. The period is short (10 ms), so a throttled process
waits milliseconds, not the 100 ms of the kernel's default period, which would put steps
into every latency that a slow core does not. Needs write access to the cgroup tree (root
in a container); cgroup v1 (`cpu` controller) and v2 (`cpu.max`) both work. Prints the
quota, then the command's own output; exits with the command's status.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

PERIOD_US = 10_000
V1, V2 = Path("/sys/fs/cgroup/cpu"), Path("/sys/fs/cgroup")


def make_group(factor: float) -> tuple[Path, str]:
    """Creates the cgroup; returns (its folder, a line saying the quota)."""
    cores = os.cpu_count() or 1
    quota = int(cores * PERIOD_US / factor)
    name = f"mammo-slow-host-{os.getpid()}"
    if (V1 / "cpu.cfs_quota_us").exists():
        group = V1 / name
        group.mkdir()
        (group / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (group / "cpu.cfs_quota_us").write_text(str(quota))
    elif (V2 / "cgroup.controllers").exists():
        group = V2 / name
        group.mkdir()
        (group / "cpu.max").write_text(f"{quota} {PERIOD_US}")
    else:
        raise SystemExit("error: no writable cgroup cpu controller found under /sys/fs/cgroup")
    return group, (f"slow host: {cores} cores capped at {quota / PERIOD_US:.2f} CPUs "
                   f"({quota} us per {PERIOD_US} us), i.e. {factor:g}x slower")


def remove_group(group: Path) -> None:
    """Kills what the command left in the group (Ray's daemons), then removes it."""
    for _ in range(50):
        pids = [int(p) for p in (group / "cgroup.procs").read_text().split()]
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.2)
    group.rmdir()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--factor", type=float, default=3.0,
                        help="how many times slower than this machine (default 3)")
    parser.add_argument("command", nargs=argparse.REMAINDER,
                        help="the command, after `--`")
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command or args.factor < 1:
        parser.error("give a factor >= 1 and a command after --")
    group, line = make_group(args.factor)
    print(line, flush=True)
    procs = group / "cgroup.procs"
    try:
        # the child joins the group before it runs anything: all it starts inherits it
        child = subprocess.Popen(command, preexec_fn=lambda: procs.write_text(str(os.getpid())))
        return child.wait()
    except KeyboardInterrupt:
        child.send_signal(signal.SIGINT)
        return child.wait()
    finally:
        remove_group(group)


if __name__ == "__main__":
    sys.exit(main())
