"""What MLflow's system metrics logging costs a run: CPU time of its sampler, measured.

    python benchmarks/system_metrics_bench.py [--seconds 120]

Starts a run in a throwaway SQLite store with `log_system_metrics=True` and keeps the
process otherwise idle for `--seconds`; the process's CPU time over that window (less the
same window without the monitor, measured first) is the monitor's cost, printed as a share
of one core and of the machine's cores. The search run logs system metrics only if that
share is small (issue: under 2 % of wall time).
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time

import mlflow


def cpu_seconds_over(seconds: float, monitored: bool) -> tuple[float, int]:
    """Returns (process CPU seconds used in `seconds` of idling, system metric points)."""
    with tempfile.TemporaryDirectory() as folder:
        mlflow.set_tracking_uri(f"sqlite:///{folder}/mlflow.db")
        with mlflow.start_run(log_system_metrics=monitored) as run:
            time.sleep(2)  # the monitor's start-up is not its steady cost
            start = time.process_time()
            time.sleep(seconds)
            used = time.process_time() - start
        history = mlflow.MlflowClient().get_metric_history(run.info.run_id,
                                                           "system/cpu_utilization_percentage")
    return used, len(history)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120)
    args = parser.parse_args()
    idle, _ = cpu_seconds_over(args.seconds, monitored=False)
    busy, points = cpu_seconds_over(args.seconds, monitored=True)
    cost = max(busy - idle, 0.0) / args.seconds
    cores = os.cpu_count() or 1
    print(f"{args.seconds:.0f} s idle: CPU {idle:.3f} s without the monitor, {busy:.3f} s with it "
          f"({points} samples of system/cpu_utilization_percentage)")
    print(f"monitor cost: {100 * cost:.2f} % of one core, {100 * cost / cores:.2f} % of the "
          f"machine's {cores} cores")


if __name__ == "__main__":
    main()
