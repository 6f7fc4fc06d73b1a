"""What an `mlflow server` costs to start and to keep idle, by worker count and with or
without MLflow's job runner (the settings `./dev.sh server` and `./dev.sh ui` choose).

    python benchmarks/server_start_bench.py [--idle 20] [--repeats 2]

Each configuration starts `mlflow server` on a fresh SQLite store on 127.0.0.1, waits for
/health, then sums the CPU time of the server and every process under it: at /health + 3 s
(start-up) and over the next `--idle` seconds (per second: the cost of a server nobody
uses). Configurations alternate (ABBA...) so that drift in the machine's load falls on all
alike; the table shows medians. MLflow's default (4 workers, job runner on) is the baseline.
"""
from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from serve.ports import free_port  # noqa: E402

CONFIGS = (("MLflow's default", 4, True), ("4 workers, no job runner", 4, False),
           ("2 workers, no job runner", 2, False), ("1 worker, no job runner", 1, False))


def tree_cpu(pid: int) -> tuple[float, int]:
    """Returns (CPU seconds of `pid` and everything under it, their number)."""
    root = psutil.Process(pid)
    total, processes = 0.0, [root] + root.children(recursive=True)
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
        except psutil.Error:
            pass
    return total, len(processes)


def measure(folder: Path, workers: int, jobs: bool, idle: float) -> dict:
    """Starts one server; returns its start-up CPU, idle CPU per second and process count."""
    port = free_port()
    env = os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": str(jobs).lower()}
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
         f"sqlite:///{folder / f'{port}.db'}", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(workers)], env=env, stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT, start_new_session=True)
    started = time.monotonic()
    try:
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() - started > 180:
                    raise RuntimeError("mlflow server did not come up")
                time.sleep(0.3)
        up = time.monotonic() - started
        time.sleep(3)
        at_start, processes = tree_cpu(server.pid)
        time.sleep(idle)
        later, _ = tree_cpu(server.pid)
        return {"up": up, "start_cpu": at_start, "idle_cpu": (later - at_start) / idle,
                "processes": processes}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=float, default=20.0)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    results: dict[str, list[dict]] = {name: [] for name, _, _ in CONFIGS}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            order = CONFIGS if repeat % 2 == 0 else CONFIGS[::-1]
            for name, workers, jobs in order:
                results[name].append(measure(Path(tmp), workers, jobs, args.idle))
                print(f"repeat {repeat + 1}/{args.repeats}: {name} done", flush=True)
    print(f"\n{os.cpu_count()} CPUs, medians of {args.repeats}\n")
    print("| server | processes | /health after | start-up CPU s | idle CPU s per s |")
    print("|---|---:|---:|---:|---:|")
    for name, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"| {name} | {med['processes']:.0f} | {med['up']:.1f} s | {med['start_cpu']:.1f} "
              f"| {med['idle_cpu']:.3f} |")


if __name__ == "__main__":
    main()
