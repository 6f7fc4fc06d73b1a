"""How long the `serve` entry point takes to stop, each way a service manager stops it.

    python benchmarks/stop_bench.py --store /path/to/mlflow.db     # a store with @champion

For each way (SIGTERM to `mlflow run` alone, to the whole process group as systemd and
`docker stop` do, to the server alone; SIGINT to the group as Ctrl-C does), starts
`mlflow run . -e serve` on a copy of the store, waits until it answers, sends the signal
and reports the seconds until every process of the group is gone, whether the one
`stopped (...)` line was printed and the serve run's final status. Grace periods to
compare with: docker 10 s, systemd 90 s.
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import mlflow

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from serve.ports import free_port  # noqa: E402

WAYS = ("sigterm_to_mlflow_run", "sigterm_to_the_group", "sigterm_to_the_server",
        "sigint_to_the_group")


def start(store: Path, port: int) -> subprocess.Popen:
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{store}",
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    env.pop("MLFLOW_RUN_ID", None)
    return subprocess.Popen(["mlflow", "run", ".", "--env-manager", "local", "-e", "serve",
                             "-P", f"port={port}"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def wait_healthy(port: int, process: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5):
                return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"serve did not answer on port {port}")


def server_pid(group: int) -> int:
    for entry in Path("/proc").iterdir():
        try:
            if (entry.name.isdigit() and os.getpgid(int(entry.name)) == group
                    and b"serve.server" in (entry / "cmdline").read_bytes()):
                return int(entry.name)
        except OSError:
            continue
    raise RuntimeError("no serve.server process")


def send(process: subprocess.Popen, way: str) -> None:
    if way == "sigterm_to_mlflow_run":
        process.send_signal(signal.SIGTERM)
    elif way == "sigterm_to_the_group":
        os.killpg(process.pid, signal.SIGTERM)
    elif way == "sigterm_to_the_server":
        os.kill(server_pid(process.pid), signal.SIGTERM)
    else:
        os.killpg(process.pid, signal.SIGINT)


def group_gone(process: subprocess.Popen, timeout: float = 180) -> float:
    """Returns the seconds until no process of `process`'s group is left (inf past
    `timeout`)."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        process.poll()  # reap the leader: a zombie would keep the group alive
        try:
            os.killpg(process.pid, 0)
        except ProcessLookupError:
            return time.monotonic() - began
        time.sleep(0.1)
    return float("inf")


def measure(store: Path, way: str) -> dict:
    port = free_port()
    process = start(store, port)
    try:
        wait_healthy(port, process)
        time.sleep(1)
        send(process, way)
        took = group_gone(process)
        output, _ = process.communicate(timeout=60)
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    time.sleep(3)  # `mlflow run` marks a run after Ctrl-C; the helper restores FINISHED
    client = mlflow.MlflowClient(f"sqlite:///{store}")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()],
                              "tags.mammo.kind = 'serve'", order_by=["attributes.start_time DESC"],
                              max_results=1)
    return {"way": way, "seconds": took, "status": runs[0].info.status if runs else "none",
            "line": sum(line.startswith("stopped (") for line in output.splitlines())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True, help="SQLite file with a registered @champion")
    parser.add_argument("--ways", nargs="+", default=list(WAYS), choices=WAYS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        store = Path(folder) / "mlflow.db"
        shutil.copy(args.store, store)
        rows = [measure(store, way) for way in args.ways]
    print("\n| way | seconds until every process is gone | `stopped` lines | run status |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['way']} | {row['seconds']:.1f} | {row['line']} | {row['status']} |")


if __name__ == "__main__":
    main()
