"""One ensemble across architectures: `register --search-run A,B` pools the fold experts of
two finished searches of different families on the same data and fold plan, registers
them as one model served over HTTP, and refuses searches that differ."""
from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from conftest import (SMOKE, config_variant, copy_store, runs_of, search_env, stop_serving,
                      use_store)
from PIL import Image
from ray import serve
from test_families_search import free_port, post

from serve.server import deploy
from serve.settings import ServeSettings
from tune.cluster import start_ray
from tune.project import PLAN_ARTIFACT, download_text

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
NAME = yaml.safe_load((ROOT / SMOKE).read_text())["tracking"]["registered_model_name"]


def run(store: Path, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", *args], cwd=ROOT, env=search_env(store),
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return result.stdout


def searches(store: Path) -> list:
    """Returns the store's finished search runs, oldest first."""
    return sorted((r for r in runs_of(store) if r.data.tags.get("mammo.kind") == "search"
                   and r.info.status == "FINISHED"), key=lambda r: r.info.start_time)


@pytest.fixture(scope="module")
def store(pipeline_store, tmp_path_factory) -> Path:
    """The session's smoke pipeline (hypermodel experts) plus a smoke search of document
    001's CNN on the same data and fold plan, registered together."""
    folder = copy_store(pipeline_store, tmp_path_factory.mktemp("across") / "store")
    cnn = config_variant(SMOKE, folder.parent / "cnn.yaml", model={"family": "microcal_cnn"})
    run(folder, "tune.search", "--config", cnn)
    first, second = searches(folder)[-2:]
    out = run(folder, "tune.register", "--config", SMOKE, "--search-run",
              f"{first.info.run_id},{second.info.run_id}")
    assert f"registered {NAME} v" in out
    return folder


def test_the_ensemble_holds_every_expert_of_both_searches(store):
    first, second = searches(store)[-2:]
    uri = f"sqlite:///{store / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri, registry_uri=uri)  # not what an earlier test set
    pooled = f"{first.info.run_id},{second.info.run_id}"
    (register,) = client.search_runs([e.experiment_id for e in client.search_experiments()],
                                     f"tags.`mammo.search_run` = '{pooled}'")
    families = [register.data.params[f"expert.{k}.family"] for k in range(4)]
    assert families == ["hypermodel", "hypermodel", "microcal_cnn", "microcal_cnn"]
    assert [register.data.params[f"expert.{k}.search_run"] for k in range(4)] == [
        first.info.run_id] * 2 + [second.info.run_id] * 2
    version = max(client.search_model_versions(f"name='{NAME}'"), key=lambda v: int(v.version))
    assert version.tags["mammo.search_run"] == pooled
    assert version.tags["mammo.register_run"] == register.info.run_id
    assert "4 experts: the 2 fold experts of each of 2 searches" in version.description


def test_the_pooled_model_predicts_with_four_experts_and_is_served(store, shared_data):
    mp = pytest.MonkeyPatch()
    client = use_store(store, mp)
    latest = max(client.search_model_versions(f"name='{NAME}'"), key=lambda v: int(v.version))
    uri = f"models:/{NAME}/{latest.version}"
    files = sorted((shared_data / "1").glob("*.png"))[:3]
    patches = np.stack([np.asarray(Image.open(f)) for f in files])
    expected = mlflow.pyfunc.load_model(uri).predict(patches)
    assert {f"expert_{k}" for k in range(4)} <= set(expected.columns)
    port = free_port()
    start_ray()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        deploy(ServeSettings(model_uri=uri, port=port,
                             tracking_uri=f"sqlite:///{store / 'mlflow.db'}"))
        body = json.dumps({"images": [base64.b64encode(f.read_bytes()).decode()
                                      for f in files]}).encode()
        answer = post(f"http://127.0.0.1:{port}/predict", body)
        np.testing.assert_allclose([p["probability"] for p in answer["predictions"]],
                                   expected["probability"], atol=1e-5)
        assert len(answer["predictions"][0]["experts"]) == 4
    finally:
        stop_serving()
        mp.undo()


def fake_search(store: Path, config: dict, plan_of: str, change_plan: bool = False) -> str:
    """Logs a FINISHED search run holding `config` and the fold plan of search `plan_of`
    (one hold-out image moved into fold 0's training part with `change_plan`): what a
    search of another config or fold plan leaves in the store."""
    monkeypatch = pytest.MonkeyPatch()
    client = use_store(store, monkeypatch)
    plan = json.loads(download_text(plan_of, PLAN_ARTIFACT))
    if change_plan:
        plan["folds"][0]["train"].append(plan["holdout"].pop())
    experiment = client.get_run(plan_of).info.experiment_id
    with mlflow.start_run(experiment_id=experiment, tags={"mammo.kind": "search"}) as run:
        mlflow.log_dict(config, "config/experiment.yaml")
        mlflow.log_text(json.dumps(plan), PLAN_ARTIFACT)
    monkeypatch.undo()
    return run.info.run_id


def test_searches_of_other_data_or_another_fold_plan_are_refused_by_name(store):
    first = searches(store)[-2]
    logged = yaml.safe_load(Path(mlflow.MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
                                 .download_artifacts(first.info.run_id, "config/experiment.yaml",
                                                     str(store.parent))).read_text())
    other = {**logged, "preprocessing": {**logged["preprocessing"], "contrast_factor": 1.5}}
    contrast = fake_search(store, other, first.info.run_id)
    moved = fake_search(store, logged, first.info.run_id, change_plan=True)
    for bad, message in ((contrast, "preprocessing.contrast_factor differ"),
                         (moved, "fold plans put images in different parts")):
        result = subprocess.run(
            [sys.executable, "-m", "tune.register", "--config", SMOKE, "--search-run",
             f"{first.info.run_id},{bad}"], cwd=ROOT, env=search_env(store),
            capture_output=True, text=True, timeout=600)
        assert result.returncode == 2, result.stdout + result.stderr
        assert f"search {bad} cannot join search {first.info.run_id}" in result.stderr
        assert message in result.stderr
