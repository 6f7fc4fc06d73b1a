"""A search over several model families, end to end: `mlflow run` with the quick families
config, then the run tree, the family comparison, and the mixed-family ensemble served
over HTTP by Ray Serve and explained."""
from __future__ import annotations

import base64
import json
import subprocess
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest
from conftest import free_port, runs_of, search_env, stop_serving, use_store
from PIL import Image
from ray import serve

from mammo_core.config import FAMILIES
from serve.server import deploy
from serve.settings import ServeSettings
from tune.cluster import start_ray

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
NAME = "mammo-families-quick"


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("families")
    result = subprocess.run(["mlflow", "run", ".", "--env-manager", "local",
                             "-P", "config=experiments/families_quick.yaml"],
                            cwd=ROOT, env=search_env(folder), capture_output=True, text=True,
                            timeout=1500)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "families (best inner-validation AUC per fold)" in result.stdout
    return folder


def of_kind(store: Path, kind: str) -> list:
    return [r for r in runs_of(store) if r.data.tags.get("mammo.kind") == kind]


def test_every_trial_fold_and_register_run_names_its_family(store):
    trials, folds = of_kind(store, "trial"), of_kind(store, "fold")
    assert len(folds) == 2 and all(r.info.status == "FINISHED" for r in trials + folds)
    assert {r.data.params["family"] for r in trials} <= set(FAMILIES)
    grid = ("hypermodel", "microcal_hypermodel", "microcal_cnn", "cbis_scratch", "mass_calc_m5",
            "vgg16")  # the config's grid: each family trained in each fold
    for fold in folds:
        tried = [t.data.params["family"] for t in trials
                 if t.data.tags["mlflow.parentRunId"] == fold.info.run_id]
        assert sorted(tried) == sorted(grid)
    assert all(r.data.metrics["n_weights"] > 0 and "epoch_seconds" in r.data.metrics
               for r in trials)
    for fold in folds:
        assert fold.data.params["family"] == fold.data.params["best.family"]
        assert int(fold.data.params["expert_params"]) > 0
    (register,) = of_kind(store, "register")
    experts = [register.data.params[f"expert.{k}.family"] for k in range(2)]
    assert experts == [f.data.params["family"] for f in sorted(
        folds, key=lambda r: int(r.data.tags["mammo.fold"]))]


def test_the_search_parent_compares_the_families_it_tried(store):
    (search,) = of_kind(store, "search")
    client = mlflow.MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    tried = {r.data.params["family"] for r in of_kind(store, "trial")}
    table = client.download_artifacts(search.info.run_id, "families/comparison.csv",
                                      str(store))
    lines = Path(table).read_text().splitlines()
    assert lines[0].startswith("family,val_auc_mean,val_auc_std,folds,trials,params,"
                               "seconds_per_epoch,experts_won")
    assert {line.split(",")[0] for line in lines[1:]} == tried
    assert sum(float(line.split(",")[-1]) for line in lines[1:]) == 2  # one expert per fold
    for family in tried:
        assert 0 <= search.data.metrics[f"family_{family}_val_auc_mean"] <= 1
    figures = {a.path for a in client.list_artifacts(search.info.run_id, "figures")}
    assert "figures/families.png" in figures


def test_the_registered_ensemble_is_served_and_explained_like_its_pyfunc(store, shared_data):
    mp = pytest.MonkeyPatch()
    client = use_store(store, mp)
    files = sorted((shared_data / "1").glob("*.png"))[:3]
    champion = client.get_model_version_by_alias(NAME, "champion")
    patches = np.stack([np.asarray(Image.open(f)) for f in files])
    expected = mlflow.pyfunc.load_model(f"models:/{NAME}/{champion.version}").predict(patches)
    port = free_port()
    start_ray()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        deploy(ServeSettings(model_uri=f"models:/{NAME}@champion", port=port,
                             tracking_uri=f"sqlite:///{store / 'mlflow.db'}"))
        body = json.dumps({"images": [base64.b64encode(f.read_bytes()).decode()
                                      for f in files]}).encode()
        answer = post(f"http://127.0.0.1:{port}/predict", body)
        got = [p["probability"] for p in answer["predictions"]]
        np.testing.assert_allclose(got, expected["probability"], atol=1e-5)
        one = json.dumps({"images": [base64.b64encode(files[0].read_bytes()).decode()]})
        explained = post(f"http://127.0.0.1:{port}/explain?method=gradcam", one.encode())
        assert np.array(explained["heatmap"]).shape == (60, 60)
    finally:
        stop_serving()
        mp.undo()


def post(url: str, body: bytes, content_type: str = "application/json") -> dict:
    request = urllib.request.Request(url, body, {"Content-Type": content_type})
    with urllib.request.urlopen(request, timeout=120) as response:
        return json.loads(response.read())
