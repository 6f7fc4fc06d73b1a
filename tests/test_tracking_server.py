"""The team tracking server: `./dev.sh server` (PostgreSQL from pip + `mlflow server` with
proxied artifacts) on 127.0.0.1, used over HTTP by two users' pipelines at once, by the
Serve app, surviving a restart, and receiving a SQLite store by `migrate`."""
from __future__ import annotations

import base64
import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow
import psutil
import pytest

from conftest import SMOKE, child_env, free_port, interrupt_group, wait_for_json
from serve.host import usable_cpus
from tune.tracking_server import default_workers

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def server(command: str, data: Path, port: int, *extra: str) -> subprocess.CompletedProcess:
    """Runs `./dev.sh server <command>` for the server in `data` on `port`."""
    return subprocess.run(["./dev.sh", "server", command, "--data", str(data), "--port", str(port),
                           *extra], cwd=ROOT, env=user_env(port), capture_output=True, text=True,
                          timeout=300)


def user_env(port: int, **extra: str) -> dict[str, str]:
    return child_env(f"http://127.0.0.1:{port}", **extra)


@pytest.fixture(scope="module")
def team(tmp_path_factory):
    """Yields (data folder, port, URL) of a running server; stops it after."""
    data, port = tmp_path_factory.mktemp("team") / "team", free_port()
    started = server("start", data, port)
    assert started.returncode == 0, started.stdout + started.stderr
    assert f"http://127.0.0.1:{port}" in started.stdout
    yield data, port, f"http://127.0.0.1:{port}"
    stopped = server("stop", data, port)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr


def client_of(url: str) -> mlflow.MlflowClient:
    return mlflow.MlflowClient(url, registry_uri=url)


def test_two_users_pipelines_at_once_each_keep_their_own_run_tree(team, tmp_path):
    """Two smoke `mlflow run .` started together against the server: both finish, every
    run of both trees is FINISHED with its metrics, and each register step took its own
    search (not the other user's, which may have finished first)."""
    _, port, url = team

    def pipeline(user: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["mlflow", "run", ".", "--env-manager", "local", "--experiment-name", user,
             "-P", f"config={SMOKE}"], cwd=ROOT, capture_output=True, text=True, timeout=1200,
            env=user_env(port, MAMMO_RAY_STORAGE=str(tmp_path / user)))

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(pipeline, ["user-a", "user-b"]))
    for result in results:
        assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    client = client_of(url)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert not [r.info.run_name for r in runs if r.info.status != "FINISHED"]
    mains = [r for r in runs if r.data.tags.get("mammo.kind") == "pipeline"]
    assert len(mains) == 2
    for main in mains:
        children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == main.info.run_id]
        search = next(r for r in children if r.data.tags.get("mammo.kind") == "search")
        register = next(r for r in children if r.data.tags.get("mammo.kind") == "register")
        assert register.data.params["resolved_search_run"] == search.info.run_id
        assert main.data.tags["mammo.search_run"] == search.info.run_id
        folds = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == search.info.run_id]
        assert len(folds) == 2 and all("test_auc" in f.data.metrics for f in folds)
        trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId")
                  in {f.info.run_id for f in folds}]
        assert len(trials) == 2 and all(t.data.metrics for t in trials)
    versions = client.search_model_versions("name = 'mammo-microcal'")
    assert sorted(int(v.version) for v in versions) == [1, 2]


def test_the_serve_app_loads_the_champion_from_the_server(team):
    _, port, url = team
    champion = client_of(url).get_model_version_by_alias("mammo-microcal", "champion")
    serve_port = free_port()
    serving = subprocess.Popen([sys.executable, "-m", "serve.server", "--port", str(serve_port)],
                               cwd=ROOT, env=user_env(port), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        health = wait_for_json(f"http://127.0.0.1:{serve_port}/healthz", serving)
        assert str(health["version"]) == str(champion.version)
    finally:
        interrupt_group(serving)


def test_predict_explain_and_baselines_run_against_the_server(team, shared_data, tmp_path):
    """The other entry points a user runs, all over HTTP: their runs end FINISHED in the
    server's store and their files reach its artifact store. (After the pipelines test:
    predict and explain score its champion.)"""
    _, port, url = team
    patches = tmp_path / "patches"
    patches.mkdir()
    for label in ("0", "1"):
        for path in sorted((shared_data / label).glob("*.png"))[:2]:
            (patches / f"{label}_{path.name}").write_bytes(path.read_bytes())
    commands = {"predict": ["-P", f"input={patches}", "-P", f"output={tmp_path / 'scores.csv'}"],
                "explain": ["-P", f"input={patches}", "-P", f"output={tmp_path / 'maps'}"],
                "baselines": ["-P", "config=experiments/wavelet_baselines_quick.yaml",
                              "-P", "search_run=none"]}
    for entry, params in commands.items():
        quick = [] if entry == "baselines" else ["-P", f"config={SMOKE}"]
        result = subprocess.run(["mlflow", "run", ".", "--env-manager", "local", "-e", entry,
                                 *quick, *params], cwd=ROOT, capture_output=True, text=True,
                                timeout=900, env=user_env(port))
        assert result.returncode == 0, (entry, (result.stdout + result.stderr)[-3000:])
    client = client_of(url)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    for kind in ("predict", "explain", "baselines"):
        run = next(r for r in runs if r.data.tags.get("mammo.kind") == kind)
        assert run.info.status == "FINISHED", kind
        assert client.list_artifacts(run.info.run_id), f"{kind}: no artifacts on the server"


def test_the_server_runs_a_worker_per_cpu_and_no_job_runner(team):
    """MLflow's job runner (eight processes polling for GenAI jobs) stays off, and the
    server has one worker per usable CPU (at most 4), not MLflow's fixed 4."""
    data, _, _ = team
    server_process = psutil.Process(int((data / "server.pid").read_text()))
    commands = [" ".join(p.cmdline()) for p in server_process.children(recursive=True)]
    assert not [c for c in commands if "huey" in c or "_job_runner" in c], commands
    workers = [c for c in commands if "multiprocessing.spawn" in c]
    assert len(workers) == default_workers() == min(usable_cpus(), 4), commands


def test_the_data_survive_a_restart(team):
    data, port, url = team
    before = {r.info.run_id for r in client_of(url).search_runs(
        [e.experiment_id for e in client_of(url).search_experiments()])}
    assert server("stop", data, port).returncode == 0
    assert server("status", data, port).returncode == 1
    assert server("start", data, port).returncode == 0
    after = {r.info.run_id for r in client_of(url).search_runs(
        [e.experiment_id for e in client_of(url).search_experiments()])}
    assert before and after == before


def migrate(store: Path, data: Path, port: int, **popen) -> subprocess.Popen:
    return subprocess.Popen(["./dev.sh", "server", "migrate", str(store / "mlflow.db"), "--data",
                             str(data), "--port", str(port)], cwd=ROOT, env=user_env(port),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True, **popen)


def finished(process: subprocess.Popen, timeout: float = 600) -> str:
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, out[-3000:]
    return out


def copies_of(target: mlflow.MlflowClient) -> list:
    return [r for r in target.search_runs([e.experiment_id for e in target.search_experiments()])
            if "mammo.migrated_from" in r.data.tags]


def interrupted_migration(store: Path, data: Path, port: int) -> None:
    """Starts a migration and kills it (SIGKILL, no clean-up) once its first run is copied."""
    target = client_of(f"http://127.0.0.1:{port}")
    process = migrate(store, data, port)
    deadline = time.monotonic() + 300
    while process.poll() is None and not copies_of(target) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert process.poll() is None, "the migration ended before it could be interrupted"
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def test_migrate_resumes_runs_twice_and_the_migrated_champion_is_served(pipeline_store,
                                                                        tmp_path):
    data, port = tmp_path / "team", free_port()
    assert server("start", data, port).returncode == 0
    try:
        interrupted_migration(pipeline_store, data, port)
        first = finished(migrate(pipeline_store, data, port))
        again = finished(migrate(pipeline_store, data, port))
        assert "migrated 0 runs and 0 model versions" in again, again
        source = client_of(f"sqlite:///{pipeline_store / 'mlflow.db'}")
        target = client_of(f"http://127.0.0.1:{port}")
        old = source.search_runs([e.experiment_id for e in source.search_experiments()])
        copies = copies_of(target)
        assert sorted(r.data.tags["mammo.migrated_from"] for r in copies) == sorted(
            r.info.run_id for r in old), first  # each run once, the interrupted one included
        new_ids = {r.data.tags["mammo.migrated_from"]: r.info.run_id for r in copies}
        for run in old:
            copy = target.get_run(new_ids[run.info.run_id])
            assert copy.info.status == run.info.status and copy.data.metrics == run.data.metrics
            assert copy.data.params == {k: new_ids.get(v, v) for k, v in run.data.params.items()}
            for key, value in run.data.tags.items():  # run ids point at the copies
                if value in new_ids:
                    assert copy.data.tags[key] == new_ids[value], key
        versions = target.search_model_versions("name = 'mammo-microcal'")
        assert len(versions) == len(source.search_model_versions("name = 'mammo-microcal'"))
        champion = target.get_model_version_by_alias("mammo-microcal", "champion")
        assert champion.description  # the model card travelled with the version
        assert champion.tags["mammo.register_run"] in new_ids.values()
        served(port, champion)
    finally:
        server("stop", data, port)


def served(port: int, champion) -> None:
    """Serves `@champion` from the server over HTTP and scores a patch with it."""
    serve_port = free_port()
    serving = subprocess.Popen([sys.executable, "-m", "serve.server", "--port", str(serve_port)],
                               cwd=ROOT, env=user_env(port), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        model = wait_for_json(f"http://127.0.0.1:{serve_port}/model", serving)
        assert model["version"] == str(champion.version) and model["metrics"], model
        body = json.dumps({"inputs": [[[0.5] * 60] * 60]}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{serve_port}/predict", body,
                                         {"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            assert len(json.loads(response.read())["predictions"]) == 1
    finally:
        interrupt_group(serving)


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.1", "::", "team-server.example"])
def test_a_network_host_without_auth_is_refused_before_anything_starts(tmp_path, host):
    refused = server("start", tmp_path / "team", free_port(), "--host", host)
    assert refused.returncode == 2 and "add --auth" in refused.stderr, refused.stderr
    assert not (tmp_path / "team").exists()


@pytest.mark.parametrize("workers", ["0", "-2"])
def test_no_worker_is_refused_before_anything_starts(tmp_path, workers):
    refused = server("start", tmp_path / "team", free_port(), "--workers", workers)
    assert refused.returncode == 2 and f"--workers {workers}" in refused.stderr, refused.stderr
    assert not (tmp_path / "team").exists()


def status_as(url: str, user: str | None = None, password: str = "") -> int:
    """Returns the HTTP status of an experiments search, with basic credentials if given."""
    request = urllib.request.Request(f"{url}/api/2.0/mlflow/experiments/search?max_results=1")
    if user:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_auth_creates_a_random_admin_password_once_and_refuses_everyone_else(tmp_path):
    data, port = tmp_path / "team", free_port()
    url = f"http://127.0.0.1:{port}"
    started = server("start", data, port, "--auth")
    try:
        assert started.returncode == 0, (started.stdout + started.stderr)[-2000:]
        secret = data / "auth" / "admin_password"
        password = secret.read_text().strip()
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600 and len(password) >= 24
        assert f"shown once): {password}" in started.stdout
        assert status_as(url) == 401
        assert status_as(url, "admin", "password1234") == 401  # MLflow's old default
        assert status_as(url, "admin", password) == 200
        # a client authenticates with MLflow's environment variables
        env = user_env(port, MLFLOW_TRACKING_USERNAME="admin", MLFLOW_TRACKING_PASSWORD=password)
        made = subprocess.run([sys.executable, "-c", "import mlflow; print(mlflow."
                               "MlflowClient().create_experiment('authenticated'))"],
                              env=env, capture_output=True, text=True, timeout=120)
        assert made.returncode == 0, made.stderr[-2000:]
        anonymous = subprocess.run([sys.executable, "-c", "import mlflow; mlflow.MlflowClient()"
                                    ".create_experiment('anonymous')"], env=user_env(port),
                                   capture_output=True, text=True, timeout=120)
        assert anonymous.returncode != 0 and "401" in anonymous.stderr[-3000:]
        assert server("stop", data, port).returncode == 0
        again = server("start", data, port, "--auth")  # the password is kept, not shown again
        assert again.returncode == 0 and password not in again.stdout
        assert status_as(url, "admin", password) == 200
    finally:
        server("stop", data, port)
