"""A real two-host Ray cluster on this machine: the quick search runs on both nodes.

Two network namespaces joined by a veth pair are the project's own test hosts (private
addresses inside them only). The head namespace runs the Ray head and the team tracking
server (`python -m tune.tracking_server`: PostgreSQL + `mlflow server`, as the README's team
setup starts it); the worker namespace runs a Ray worker node. The search is started from the
head's namespace, and every trial run must reach the tracking server over HTTP.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from conftest import SMOKE, child_env, config_variant

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("ip"),
                                 reason="network namespaces need root and iproute2")]

QUERY = """
import json, mlflow
client = mlflow.MlflowClient()
runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
print(json.dumps([{"kind": r.data.tags.get("mammo.kind"), "status": r.info.status,
                   "node": r.data.tags.get("mammo.node_ip")} for r in runs]))
"""


class TwoHosts:
    """Namespaces `head` and `work` with addresses 10.213.<n>.1 and .2 on a veth pair."""

    def __init__(self, tmp: Path):
        n = os.getpid() % 200 + 20
        self.tag = uuid.uuid4().hex[:8]  # marks every process we start, for teardown
        self.head, self.work = f"mh{self.tag}", f"mw{self.tag}"
        self.head_ip, self.work_ip = f"10.213.{n}.1", f"10.213.{n}.2"
        self.tmp, self.team = tmp, tmp / "team"

    def up(self) -> None:
        veth_h, veth_w = f"vh{self.tag}", f"vw{self.tag}"
        for command in (
                f"ip netns add {self.head}", f"ip netns add {self.work}",
                f"ip link add {veth_h} type veth peer name {veth_w}",
                f"ip link set {veth_h} netns {self.head}", f"ip link set {veth_w} netns {self.work}",
                f"ip -n {self.head} addr add {self.head_ip}/24 dev {veth_h}",
                f"ip -n {self.work} addr add {self.work_ip}/24 dev {veth_w}",
                f"ip -n {self.head} link set {veth_h} up", f"ip -n {self.work} link set {veth_w} up",
                f"ip -n {self.head} link set lo up", f"ip -n {self.work} link set lo up"):
            subprocess.run(command.split(), check=True)

    def env(self, **extra: str) -> dict[str, str]:
        # an isolated test cluster: token authentication off, as the guide allows
        return child_env(drop=("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "MLFLOW_TRACKING_URI"),
                         RAY_AUTH_MODE="disabled", MAMMO_TEST_CLUSTER=self.tag, **extra)

    def run(self, namespace: str, args: list[str], **kwargs) -> subprocess.CompletedProcess:
        return subprocess.run(["ip", "netns", "exec", namespace, *args], cwd=ROOT,
                              capture_output=True, text=True, **kwargs)

    def start_server(self) -> None:
        """The team server of `./dev.sh server` (PostgreSQL + mlflow server), on the head's
        address: the command a user runs on the head; returns once /health answers."""
        started = self.run(self.head, [sys.executable, "-m", "tune.tracking_server", "start",
                                       "--data", str(self.team), "--host", self.head_ip,
                                       "--port", "5000", "--auth"], env=self.env(), timeout=300)
        assert started.returncode == 0, (started.stdout + started.stderr)[-2000:]

    def credentials(self) -> dict[str, str]:
        """The environment of a client of the authenticated server (its generated admin)."""
        password = (self.team / "auth" / "admin_password").read_text().strip()
        return {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": password}

    def stop_server(self) -> None:
        self.run(self.head, [sys.executable, "-m", "tune.tracking_server", "stop",
                             "--data", str(self.team)], env=self.env(), timeout=120)

    def down(self) -> None:
        """Stops the team server, kills every process carrying our marker, then deletes the
        namespaces."""
        if self.team.exists():
            self.stop_server()
        marker = f"MAMMO_TEST_CLUSTER={self.tag}".encode()
        for entry in os.listdir("/proc"):
            if entry.isdigit() and int(entry) != os.getpid():
                try:
                    if marker in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                        os.kill(int(entry), signal.SIGKILL)
                except OSError:
                    continue
        for namespace in (self.head, self.work):
            subprocess.run(["ip", "netns", "del", namespace], capture_output=True)


def test_quick_search_runs_trials_on_both_nodes_and_logs_to_the_server(tmp_path):
    hosts = TwoHosts(tmp_path)
    try:
        hosts.up()
        hosts.start_server()
        ray = str(BIN / "ray")
        head = hosts.run(hosts.head, [ray, "start", "--head", f"--node-ip-address={hosts.head_ip}",
                                      "--port=6379", "--num-cpus=1", "--include-dashboard=false",
                                      "--disable-usage-stats"], env=hosts.env(), timeout=180)
        assert head.returncode == 0, head.stderr[-2000:]
        work = hosts.run(hosts.work, [ray, "start", f"--address={hosts.head_ip}:6379",
                                      f"--node-ip-address={hosts.work_ip}", "--num-cpus=1",
                                      "--disable-usage-stats"], env=hosts.env(), timeout=180)
        assert work.returncode == 0, work.stderr[-2000:]

        uri = f"http://{hosts.head_ip}:5000"
        # 2 folds of 2 trials at once, one epoch each: a trial per node at the same time
        config = config_variant(SMOKE, tmp_path / "two_trials.yaml",
                                search={"trials_per_fold": 2, "max_concurrent_trials": 2})
        search = hosts.run(hosts.head, [sys.executable, "-m", "tune.search", "--config", config],
                           env=hosts.env(RAY_ADDRESS=f"{hosts.head_ip}:6379",
                                         MLFLOW_TRACKING_URI=uri,
                                         MAMMO_RAY_STORAGE=str(tmp_path / "ray_results"),
                                         **hosts.credentials()),
                           timeout=900)
        assert search.returncode == 0, (search.stdout + search.stderr)[-3000:]
        assert f"joined cluster at {hosts.head_ip}:6379 (2 CPUs)" in search.stdout

        query = hosts.run(hosts.head, [sys.executable, "-c", QUERY],
                          env=hosts.env(MLFLOW_TRACKING_URI=uri, **hosts.credentials()),
                          timeout=120)
        assert query.returncode == 0, query.stderr[-2000:]
        runs = json.loads(query.stdout.strip().splitlines()[-1])
        trials = [r for r in runs if r["kind"] == "trial"]
        assert len(trials) == 4 and all(r["status"] == "FINISHED" for r in runs)
        assert {r["node"] for r in trials} == {hosts.head_ip, hosts.work_ip}
        # the runs are in PostgreSQL and the artifacts came over HTTP into the server's folder
        assert (hosts.team / "pgdata" / "PG_VERSION").exists()
        assert list((hosts.team / "artifacts").rglob("MLmodel")), "no fold expert reached the server"
    finally:
        hosts.down()
