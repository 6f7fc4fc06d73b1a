"""What MLflow's basic auth costs a client of the team server, per tracking call.

    python benchmarks/auth_bench.py --calls 100

Starts `./dev.sh server` three times on a fresh data folder each (no auth; `--auth` as the
project configures it, credentials cached `AUTH_CACHE_S` seconds; `--auth` with MLflow's
default of no cache) and times `calls` `log_metric` calls of one client against each.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import mlflow

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serve.ports import free_port  # noqa: E402
from tune import tracking_server  # noqa: E402


def per_call(auth: bool, cache_s: int, calls: int) -> float:
    """Returns the mean seconds of one `log_metric` call against a fresh server."""
    tracking_server.AUTH_CACHE_S = cache_s
    with tempfile.TemporaryDirectory() as folder:
        data, port = Path(folder) / "team", free_port()
        url, _ = tracking_server.start(data, "127.0.0.1", port, auth)
        try:
            if auth:
                os.environ.update(MLFLOW_TRACKING_USERNAME=tracking_server.ADMIN,
                                  MLFLOW_TRACKING_PASSWORD=(data / "auth" / "admin_password")
                                  .read_text().strip())
            client = mlflow.MlflowClient(url)
            run = client.create_run(client.create_experiment("bench")).info.run_id
            began = time.perf_counter()
            for step in range(calls):
                client.log_metric(run, "m", step, step=step)
            return (time.perf_counter() - began) / calls
        finally:
            tracking_server.stop(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=100)
    args = parser.parse_args()
    cached = tracking_server.AUTH_CACHE_S
    rows = {"no auth": per_call(False, cached, args.calls),
            f"--auth, credentials cached {cached} s (the project's setting)":
                per_call(True, cached, args.calls),
            "--auth, no cache (MLflow's default)": per_call(True, 0, args.calls)}
    print("\n| server | ms per log_metric call | vs no auth |\n|---|---|---|")
    for label, seconds in rows.items():
        print(f"| {label} | {seconds * 1000:.0f} | {seconds / rows['no auth']:.2f}x |")


if __name__ == "__main__":
    main()
