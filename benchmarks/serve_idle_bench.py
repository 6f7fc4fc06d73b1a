"""CPU a local Ray node with the Serve app takes while no request arrives, per process.

    python benchmarks/serve_idle_bench.py --store <copy of a store> [--model-uri models:/mammo-microcal/1]
        [--seconds 20] [--control-loop-interval 0.1]

Starts the scoring service as `python -m serve.server` does (direct ingress, loopback),
waits 10 s for start-up work to settle, then samples the user + system CPU time of every
Ray and Serve process over `--seconds`. On a host under a CPU quota (a container's
`--cpus`, `benchmarks/slow_host.py`) this background is taken from the quota before a
request arrives; `mlflow models serve` has none. `--control-loop-interval` sets Serve's
controller period (RAY_SERVE_CONTROL_LOOP_INTERVAL_S, 0.1 s by default), the largest share.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def cpu_seconds(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
        return times.user + times.system
    except psutil.Error:  # ended meanwhile
        return 0.0


def ray_processes() -> list[psutil.Process]:
    """Returns this host's Ray and Serve processes (not this one)."""
    found = []
    for process in psutil.process_iter():
        try:
            line = " ".join(process.cmdline()).lower()
        except psutil.Error:
            continue
        if process.pid != os.getpid() and ("ray" in line or "serve" in line):
            found.append(process)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--model-uri", default="models:/mammo-microcal@champion")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--port", type=int, default=8311)
    parser.add_argument("--control-loop-interval", type=float, default=None)
    args = parser.parse_args()
    if args.control_loop_interval is not None:  # read when Serve's modules are imported
        os.environ["RAY_SERVE_CONTROL_LOOP_INTERVAL_S"] = str(args.control_loop_interval)
    import tune  # noqa: F401  (loopback Ray environment before ray starts)
    from serve.server import deploy, shutdown, start_serving
    from serve.settings import ServeSettings

    settings = ServeSettings(tracking_uri=f"sqlite:///{Path(args.store).resolve()}",
                             model_uri=args.model_uri, port=args.port)
    print(start_serving(settings), flush=True)
    try:
        deploy(settings)
        time.sleep(10)
        processes = ray_processes()
        before = {p.pid: cpu_seconds(p) for p in processes}
        start = time.monotonic()
        time.sleep(args.seconds)
        elapsed = time.monotonic() - start
        rows = sorted(((cpu_seconds(p) - before[p.pid]) / elapsed, " ".join(p.cmdline())[:70])
                      for p in processes)[::-1]
    finally:
        shutdown()
    interval = os.environ.get("RAY_SERVE_CONTROL_LOOP_INTERVAL_S", "0.1 (default)")
    print(f"\ncontrol loop interval {interval} s; idle {elapsed:.0f} s; "
          f"total **{sum(r[0] for r in rows):.3f} CPUs**\n\n| CPUs | process |\n|---:|---|")
    for share, line in rows[:10]:
        print(f"| {share:.3f} | `{line.strip()}` |")


if __name__ == "__main__":
    main()
