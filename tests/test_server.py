"""The `serve` entry point under the real `mlflow run`: stopping it the ways operators do.

A process manager sends SIGTERM to the process it started (`mlflow run`, which dies at
once and leaves its child behind), or to every process of the unit at once (systemd's
default, `docker stop`: the whole group, Ray's processes included), or an operator to the
server itself; a terminal's Ctrl-C sends SIGINT to the whole process group. Every way,
Serve must shut down within a manager's grace period, the port must be free again, one
line must say so, and the project's run must end FINISHED, named after the served version.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
from conftest import copy_store, free_port, search_env, wait_for_json

from mammo_core.images import formats_of
from serve.app import reading
from serve.server import ingress_of, parse_settings, start_serving
from serve.settings import ServeSettings
from tune.project import UsageError

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def store(pipeline_store, tmp_path_factory) -> Path:
    """This module's copy of the session's pipeline store: each stop adds a serve run, and the tests read the latest."""
    return copy_store(pipeline_store, tmp_path_factory.mktemp("server_store") / "store")


def port_is_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def serve_run(client: mlflow.MlflowClient):
    runs = [r for e in client.search_experiments()
            for r in client.search_runs([e.experiment_id])
            if r.data.tags.get("mlflow.project.entryPoint") == "serve"]
    return max(runs, key=lambda r: r.info.start_time)


def run_status_becomes(client: mlflow.MlflowClient, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = serve_run(client).info.status
        if status != "RUNNING":
            return status
        time.sleep(1)
    return "RUNNING"


# Both ingress modes, one stop each: the replica itself holds the port (direct, the
# default) or Serve's HTTP proxy does.
@pytest.mark.parametrize("how, ingress", [("sigterm_to_mlflow_run", "direct"),
                                          ("ctrl_c_to_the_group", "proxy"),
                                          ("sigterm_to_the_group", "direct"),
                                          ("sigterm_to_the_server", "direct")])
def test_an_operator_stop_releases_the_port_and_finishes_the_run(store, how, ingress):
    port = free_port()
    server = subprocess.Popen(
        ["mlflow", "run", ".", "--env-manager", "local", "-e", "serve", "-P", f"port={port}",
         "-P", f"ingress={ingress}"],
        cwd=ROOT, env=search_env(store), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True, start_new_session=True)
    uri = f"sqlite:///{store / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    try:
        health = wait_for_json(f"http://127.0.0.1:{port}/healthz", server)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/predict",
            json.dumps({"inputs": [[[0] * 60] * 60], "bit_depth": 8}).encode(),
            {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:  # the model answers
            assert json.loads(response.read())["predictions"][0]["label"] in (0, 1)
        stopped_at = time.monotonic()
        stop(server, how)
        status = run_status_becomes(client)
        deadline = time.monotonic() + 60
        while not port_is_free(port) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert port_is_free(port), "the port is still taken after the stop"
        output, _ = server.communicate(timeout=120)
        took = time.monotonic() - stopped_at
    finally:  # whatever failed, nothing of this group may outlive the test
        try:
            os.killpg(server.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        server.wait()
    assert status == "FINISHED", output[-3000:]
    # the final word, once every process is gone (`mlflow run` itself marks a run FAILED
    # after Ctrl-C; serve/server.py restores FINISHED behind it)
    deadline = time.monotonic() + 60
    while serve_run(client).info.status != "FINISHED" and time.monotonic() < deadline:
        time.sleep(1)
    run = serve_run(client)
    assert run.info.status == "FINISHED"
    assert run.info.run_name == f"serve-{health['model']}-v{health['version']}"
    assert run.data.params["served_model_version"] == str(health["version"])
    says = {"direct": "direct ingress: the replica answers", "proxy": "through Serve's HTTP proxy"}
    assert says[ingress] in output, output[-3000:]
    stops = [line for line in output.splitlines() if line.startswith("stopped (")]
    assert len(stops) == 1 and f"127.0.0.1:{port} released" in stops[0], output[-3000:]
    # systemd's grace period is 90 s (docker's 10 s: docs/benchmarks.md has the figures)
    assert took < 60, f"every process gone {took:.0f} s after the signal"


def stop(server: subprocess.Popen, how: str) -> None:
    """Stops the `mlflow run` group the way `how` names."""
    if how == "sigterm_to_mlflow_run":
        server.send_signal(signal.SIGTERM)  # the `mlflow run` process only
    elif how == "ctrl_c_to_the_group":
        os.killpg(server.pid, signal.SIGINT)
    elif how == "sigterm_to_the_group":
        os.killpg(server.pid, signal.SIGTERM)
    else:
        os.kill(server_process(server.pid), signal.SIGTERM)


def server_process(group: int) -> int:
    """Returns the pid of `python -m serve.server` in the process group `group`."""
    for entry in Path("/proc").iterdir():
        try:
            if (entry.name.isdigit() and os.getpgid(int(entry.name)) == group
                    and b"serve.server" in (entry / "cmdline").read_bytes()):
                return int(entry.name)
        except OSError:  # gone meanwhile
            continue
    raise AssertionError(f"no serve.server process in group {group}")


def test_direct_ingress_only_for_one_replica_on_a_node_this_process_starts():
    one = ServeSettings()
    assert ingress_of(one, new_local_node=True) == "direct"
    # a cluster (or a Ray already running) was started without the variables
    assert ingress_of(one, new_local_node=False) == "proxy"
    # several replicas share the port only behind the proxy
    assert ingress_of(ServeSettings(num_replicas=2), new_local_node=True) == "proxy"
    assert ingress_of(ServeSettings(ingress="proxy"), new_local_node=True) == "proxy"
    with pytest.raises(ValueError, match="ingress"):
        ServeSettings(ingress="haproxy")


def test_list_settings_take_several_words_on_the_command_line():
    settings = parse_settings(["--image-formats", "PNG", "JPEG", "--max-request-pixels", "100"])
    assert settings.image_formats == ("PNG", "JPEG") and settings.max_request_pixels == 100
    with pytest.raises(SystemExit):
        parse_settings(["--image-formats", "GIF"])


def test_a_port_a_server_answers_on_is_a_clear_error_at_once():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        began = time.monotonic()
        with pytest.raises(UsageError, match=f"port {port} is taken: a server answers"):
            start_serving(ServeSettings(port=port))
        assert time.monotonic() - began < 10


def test_a_study_trained_on_jpeg_files_is_served_jpeg_uploads():
    class Model:  # what serve.model.load_model reports for a study of JPEG folders
        info = {"resizes": False, "study_formats": ["JPEG"]}
    settings = reading(ServeSettings(), Model())
    assert settings.image_formats == ("PNG", "PPM", "DICOM", "JPEG")
    assert formats_of((".png", ".pgm", ".JPG", ".jpeg")) == ("PNG", "PPM", "JPEG")
