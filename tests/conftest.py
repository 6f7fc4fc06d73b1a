"""Shared fixtures: the real shared data, generated data sets, isolated MLflow stores."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from filelock import FileLock
from PIL import Image

from mammo_core.config import DataConfig
from serve.host import usable_cpus
from serve.ports import free_port  # noqa: F401  (the tests' one way to find a port)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data" / "microcal"
# 2 folds x 1 trial x 1 epoch: every plumbing test's config (microcal_quick.yaml, 5 folds x
# 2 trials x 3 epochs, is left to the tests that need several trials or folds at once)
SMOKE = "experiments/microcal_smoke.yaml"


# The suite runs on every core (`./dev.sh test`: pytest-xdist, `--dist loadscope`): each
# file whole on one worker, so a module's fixtures (a study's pipeline, a server) are built
# once; only test_readme.py is split, by its classes (a group of pages each). Files start
# in this order, longest first (measured: `--durations` of a run), so that no long file
# starts last while the other workers sit idle.
LONGEST_FIRST = ("test_studies.py", "test_readme.py", "test_tracking_server.py",
                 "test_transfer.py", "test_families_search.py", "test_search.py",
                 "test_server.py", "test_two_nodes.py", "test_adapt.py",
                 "test_register_across.py", "test_recalibrate.py", "test_registry.py",
                 "test_families.py", "test_serve.py")
# A worker holds TensorFlow and a Ray node at times (a few GB each): more than four at once
# buys little on a machine of many cores and risks its memory.
MAX_WORKERS = 4


def pytest_xdist_auto_num_workers(config) -> int:
    # One more than the CPUs this process may use (a CI container's quota included, as Serve
    # counts them): much of a test's time is waiting on a server's start or a subprocess's
    # imports, which the extra worker fills. On 2 cores: 21 min 02 s with 2 workers, 18 min
    # 47 s with 3 (docs/benchmarks.md, "The suite: each command once").
    return min(usable_cpus() + 1, MAX_WORKERS)


def pytest_collection_modifyitems(items) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: in-file order kept


@pytest.fixture(scope="session")
def shared_data() -> Path:
    assert SHARED_DATA.is_dir(), f"the shared data set is expected at {SHARED_DATA}"
    return SHARED_DATA


def write_image(path: Path, array: np.ndarray) -> None:
    """Writes a grayscale image; the suffix picks PNG or PGM, the dtype 8 or 16 bit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)  # uint8 -> mode L, uint16 -> mode I;16


def make_dataset(root: Path, n_per_class: int = 4, size: tuple[int, int] = (60, 60),
                 dtype=np.uint8, suffix: str = ".png", seed: int = 0) -> Path:
    """Writes a small class-folder data set with file names in the microcal pattern."""
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max
    for label in (0, 1):
        for i in range(n_per_class):
            case = 100 * (label + 1) + i
            pixels = rng.integers(0, top // 2, size=size, dtype=dtype)
            if label:
                pixels[size[0] // 2, size[1] // 2] = top
            write_image(root / str(label) / f"{case:04d}s1_1_1.pgm_1{suffix}", pixels)
    return root


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    return make_dataset(tmp_path / "tiny")


@pytest.fixture
def data_config() -> DataConfig:
    return DataConfig()


@pytest.fixture
def tracking_store(tmp_path: Path, monkeypatch) -> str:
    """Points MLflow at a fresh SQLite store in tmp_path; returns its URI."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    yield uri
    while mlflow.active_run():
        mlflow.end_run()


# What this test process may have set that must not reach a child: its active run, its Ray,
# and the registry URI that `mlflow.set_registry_uri` exports for a store of an earlier test.
LEAKS = ("MLFLOW_RUN_ID", "RAY_ADDRESS", "MLFLOW_REGISTRY_URI")


def child_env(tracking_uri: str | None = None, drop: tuple[str, ...] = (),
              **extra: str) -> dict[str, str]:
    """Returns the environment of a subprocess: this venv's binaries first, unbuffered output,
    none of `LEAKS` or `drop`, `MLFLOW_TRACKING_URI` set when given, then `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in (*LEAKS, *drop)}
    env.update(PATH=f"{Path(sys.executable).parent}:{env['PATH']}", PYTHONUNBUFFERED="1")
    if tracking_uri:
        env["MLFLOW_TRACKING_URI"] = tracking_uri
    env.update(extra)
    return env


def search_env(store: Path) -> dict[str, str]:
    """Returns the environment of an entry-point subprocess using the store folder `store`."""
    return child_env(f"sqlite:///{store / 'mlflow.db'}",
                     MAMMO_RAY_STORAGE=str(store / "ray_results"))


def wait_for_json(url: str, server: subprocess.Popen, timeout: float = 240) -> dict:
    """Returns the JSON that `url` answers once it does; fails if `server` exits first or
    nothing answers within `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, f"server exited early:\n{server.stdout.read()[-3000:]}"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            time.sleep(1)
    raise AssertionError(f"no answer from {url} within {timeout} s")


def interrupt_group(server: subprocess.Popen, timeout: float = 90) -> None:
    """Stops `server`'s process group as a user would (Ctrl-C) and returns once every
    process of the group has exited (`mlflow run` exits before the server it started has
    shut down and released its port); kills what lingers past `timeout`."""
    deadline = time.monotonic() + timeout
    try:
        os.killpg(server.pid, signal.SIGINT)
        while time.monotonic() < deadline:
            os.killpg(server.pid, 0)  # raises ProcessLookupError once the group is gone
            server.poll()  # reap the leader, so that it does not linger as a zombie
            time.sleep(0.5)
        os.killpg(server.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    server.wait()


def stop_serving() -> None:
    """Shuts Serve and then Ray down in this process, Ray even if Serve's shutdown fails:
    a Ray left running here turns every later in-process Serve test into a proxy deployment."""
    import ray
    from ray import serve

    try:
        serve.shutdown()
    finally:
        ray.shutdown()


def runs_of(store: Path) -> list:
    """Returns every run of every experiment in the store folder `store`."""
    client = mlflow.MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    return client.search_runs([e.experiment_id for e in client.search_experiments()])


@pytest.fixture(scope="session")
def pipeline_store(tmp_path_factory) -> Path:
    """A store after the README's first command, `./dev.sh run` (tune -> register ->
    evaluate), on the smoke config: about a minute, run once per test session.

    Tests that only read it share it; a test (or module) that adds runs or versions works
    on `copy_store(pipeline_store, ...)`, so that no test depends on the order files run in.
    Under xdist the first worker that needs it builds it (the others wait on a file lock)
    and each worker gets a copy of its own: the serve tests add serve runs to it, and one
    worker's must not become another's "latest serve run".
    """
    shared = session_folder(tmp_path_factory)
    built = shared / "pipeline"
    with FileLock(str(shared / "pipeline.lock")):
        if not (built / "built").exists():
            build_pipeline_store(built)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        return copy_store(built, tmp_path_factory.mktemp("pipeline") / "store")
    return built


def session_folder(tmp_path_factory) -> Path:
    """Returns the folder every worker of this test session shares (xdist gives each worker
    a base folder of its own inside it), or the session's base folder without xdist."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def build_pipeline_store(folder: Path) -> None:
    """Runs `./dev.sh run` on the smoke config into `folder` (emptied first), then marks it
    built: a failed build leaves no store that the next worker would take for a finished
    one. (Built in place: its experiments' artifact locations are absolute paths.)"""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir()
    result = subprocess.run(["./dev.sh", "run", "-P", f"config={SMOKE}"],
                            cwd=PROJECT_ROOT, env=search_env(folder), capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "mammo-microcal v1 @champion" in result.stdout
    (folder / "built").touch()


def config_variant(config: str, path: Path, **sections: dict) -> str:
    """Writes the project config `config` with `sections` updated (e.g. search={"max_epochs":
    8}) to `path`; returns the path as text."""
    data = yaml.safe_load((PROJECT_ROOT / config).read_text())
    for section, values in sections.items():
        data[section].update(values)
    path.write_text(yaml.safe_dump(data))
    return str(path)


def copy_store(store: Path, folder: Path) -> Path:
    """Returns `folder`, a copy of the store folder `store` (database and artifacts), for a
    test that writes to it. Runs of the copy's experiments keep their artifacts under the
    original's `mlartifacts/` (the experiment's location is an absolute path), new runs
    too: no test deletes there, so the copy reads and adds without touching the original's
    runs."""
    shutil.copytree(store, folder, ignore=shutil.ignore_patterns("ray_results"))
    return folder


def use_store(folder: Path, monkeypatch) -> mlflow.MlflowClient:
    """Points this process's MLflow (tracking and registry) at the store in `folder`."""
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)  # undone after the test, unlike set_registry_uri
    monkeypatch.delenv("MLFLOW_RUN_ID", raising=False)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return mlflow.MlflowClient(uri)
