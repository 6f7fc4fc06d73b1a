"""Where the test suite's CPU goes: every process sampled twice a second while a command
runs, CPU seconds summed by test file and by kind of process.

    pip install setproctitle   # pytest-xdist then names the running test in each worker's title
    python benchmarks/suite_profile.py --out profile.json -- ./dev.sh test -p no:cacheprovider

A process counts for the test file its xdist worker was running when the process was
first seen (walking up its parents); its kind comes from its command line (an entry point
`-m tune.pipeline`, a Ray worker `ray::ImplicitFunc`, the `mlflow` CLI, ...). Processes
alive before the command count only for what they use during it. Prints the two tables;
writes both, and the per-file kinds, to --out.
"""
from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import sys
from pathlib import Path

import psutil

WORKER_TITLE = re.compile(r"\[pytest-xdist running\] (tests/[\w.]+)")


def category(cmd: str) -> str:  # noqa: C901 — one rule a line, in order
    """Returns the kind of process a command line belongs to."""
    m = re.search(r"-m (tune|serve)\.(\w+)", cmd)  # before "pytest": args hold pytest tmp paths
    if m: return f"entry {m.group(1)}.{m.group(2)}"
    if "pytest-xdist" in cmd or "import sys;exec(eval(sys.stdin.readline()))" in cmd: return "xdist worker"
    if re.search(r"-m pytest|bin/pytest", cmd): return "pytest"
    if re.search(r"bin/mlflow (run|models)", cmd): return "mlflow CLI " + cmd.split("bin/mlflow ")[1].split()[0]
    if "mlflow" in cmd and ("server" in cmd or "gunicorn" in cmd or "uvicorn" in cmd or "huey" in cmd): return "mlflow server"
    if "bin/mlflow" in cmd: return "mlflow CLI other"
    if cmd.startswith("ray::"): return cmd.split()[0].split(".")[0][:40]
    if "default_worker.py" in cmd: return "ray worker starting"
    for k in ("gcs_server", "raylet/raylet", "dashboard", "log_monitor", "monitor.py", "runtime_env", "ray_client"):
        if k in cmd: return "ray " + k
    if "postgres" in cmd: return "postgres"
    if "multiprocessing" in cmd: return "multiprocessing child"
    if "python" in cmd: return "python other: " + " ".join(cmd.split()[1:4])[:70]
    return "other: " + cmd[:50]


def test_file(process, processes: dict) -> str | None:
    """Returns the test file named by the title of the xdist worker above `process`."""
    for _ in range(30):
        found = WORKER_TITLE.search(" ".join(process.info.get("cmdline") or []))
        if found:
            return found.group(1)
        parent = processes.get(process.info.get("ppid"))
        if parent is None:
            return None
        process = parent
    return None


class Sampler:
    """CPU seconds by kind of process, by test file, and by both."""

    def __init__(self):
        self.last, self.owner = {}, {}
        self.kinds, self.files, self.both = (collections.Counter() for _ in range(3))

    def sample(self, baseline: bool = False) -> None:
        processes = {p.pid: p for p in psutil.process_iter(
            ["cmdline", "cpu_times", "create_time", "ppid"]) if p.pid != psutil.Process().pid}
        for pid, process in processes.items():
            try:
                self.count(process, processes, baseline)
            except (psutil.Error, TypeError, AttributeError):
                pass  # gone between the listing and the read

    def count(self, process, processes: dict, baseline: bool) -> None:
        times = process.info["cpu_times"]
        key, cpu = (process.pid, process.info["create_time"]), times.user + times.system
        used, self.last[key] = cpu - self.last.get(key, 0.0), cpu
        if baseline or used <= 0:
            return
        if key not in self.owner:
            self.owner[key] = test_file(process, processes)
        kind, where = category(" ".join(process.info["cmdline"] or [])), self.owner[key] or "?"
        self.kinds[kind] += used
        self.files[where] += used
        self.both[f"{where} | {kind}"] += used


def table(title: str, counts: collections.Counter, top: int = 25) -> str:
    total = sum(counts.values()) or 1
    rows = [f"| {name} | {seconds:.0f} | {100 * seconds / total:.1f} % |"
            for name, seconds in counts.most_common(top)]
    return "\n".join([f"| {title} | CPU s | share |", "|---|---:|---:|", *rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="suite_profile.json")
    parser.add_argument("--interval", type=float, default=0.5)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    sampler = Sampler()
    sampler.sample(baseline=True)
    process = subprocess.Popen(command)
    while True:
        try:
            process.wait(timeout=args.interval)
            break
        except subprocess.TimeoutExpired:
            sampler.sample()
    sampler.sample()
    print(table("test file", sampler.files), "\n", table("kind of process", sampler.kinds), sep="\n")
    Path(args.out).write_text(json.dumps({"files": sampler.files, "kinds": sampler.kinds,
                                          "both": sampler.both}, indent=1))
    sys.exit(process.returncode)


if __name__ == "__main__":
    main()
