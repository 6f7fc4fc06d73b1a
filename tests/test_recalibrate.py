"""`recalibrate` on a shifted copy of shared patches: a site alias with the same experts,
metrics before and after, and the alias served by `mlflow run . -e serve`."""
from __future__ import annotations

import subprocess
from pathlib import Path

import mlflow
import numpy as np
import pytest
from conftest import (copy_store, free_port, interrupt_group, runs_of, search_env, use_store,
                      wait_for_json)
from PIL import Image

from mammo_core.images import quantize
from mammo_core.shift import Shift, combined

ROOT = Path(__file__).resolve().parents[1]
NAME = "mammo-microcal"
pytestmark = pytest.mark.slow


def shifted_site(shared_data: Path, folder: Path, per_class: int = 12) -> Path:
    """Writes contrast x1.5 + brightness +0.05 copies of shared patches under names the
    case pattern does not match (another site's file names)."""
    for label in (0, 1):
        files = sorted((shared_data / str(label)).glob("*.png"))[-per_class:]
        units = np.stack([np.asarray(Image.open(f), dtype=np.float32) / 255 for f in files])
        shifted = combined(units, (Shift("contrast", 1.5), Shift("brightness", 0.05)))
        (folder / str(label)).mkdir(parents=True)
        for k, image in enumerate(quantize(shifted, 8)):
            Image.fromarray(image).save(folder / str(label) / f"site_{label}_{k:02d}.png")
    return folder


@pytest.fixture(scope="module")
def recalibrated(pipeline_store, shared_data, tmp_path_factory) -> tuple[Path, str]:
    """A copy of the smoke pipeline's store after `mlflow run . -e recalibrate`."""
    store = tmp_path_factory.mktemp("recalibrate") / "store"
    copy_store(pipeline_store, store)
    site = shifted_site(shared_data, store.parent / "site")
    result = subprocess.run(["mlflow", "run", ".", "--env-manager", "local", "-e", "recalibrate",
                             "-P", f"data_dir={site}", "-P", "site=test"],
                            cwd=ROOT, env=search_env(store), capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return store, result.stdout


def test_a_site_alias_points_at_a_new_version_with_the_same_experts(recalibrated, monkeypatch):
    store, stdout = recalibrated
    client = use_store(store, monkeypatch)
    champion = client.get_model_version_by_alias(NAME, "champion")
    site = client.get_model_version_by_alias(NAME, "site-test")
    assert int(site.version) > int(champion.version)
    assert site.tags["mammo.site"] == "test" and "site `test`" in site.description
    assert "each file is its own group" in stdout  # foreign names just work
    old = mlflow.pyfunc.load_model(f"models:/{NAME}@champion").unwrap_python_model().predictor
    new = mlflow.pyfunc.load_model(f"models:/{NAME}@site-test").unwrap_python_model().predictor
    np.testing.assert_array_equal(old.ensemble.weights, new.ensemble.weights)
    for a, b in zip(old.experts, new.experts):
        for wa, wb in zip(a.weights, b.weights):
            np.testing.assert_array_equal(wa.numpy(), wb.numpy())
    # the calibration is refitted to the site; the threshold on the calibrated probability
    # keeps its registered value (recalibrate's default, --threshold keep)
    assert new.ensemble.calibration != old.ensemble.calibration
    assert new.ensemble.threshold == pytest.approx(old.ensemble.threshold)


def test_the_run_reports_before_and_after_and_ends_finished(recalibrated):
    store, stdout = recalibrated
    (run,) = [r for r in runs_of(store) if r.data.tags.get("mammo.kind") == "recalibrate"]
    assert run.info.status == "FINISHED" and run.data.tags["mammo.site"] == "test"
    for metric in ("auc", "sensitivity", "specificity", "balanced_accuracy", "ece"):
        assert f"before_{metric}" in run.data.metrics and f"after_{metric}" in run.data.metrics
    assert "before (as registered)" in stdout and "after (cross-fitted)" in stdout
    assert all(r.info.status != "RUNNING" for r in runs_of(store))


def test_the_site_alias_is_served_by_the_serve_entry_point(recalibrated):
    store, _ = recalibrated
    port = free_port()
    server = subprocess.Popen(
        ["mlflow", "run", ".", "--env-manager", "local", "-e", "serve",
         "-P", f"model_uri=models:/{NAME}@site-test", "-P", f"port={port}"],
        cwd=ROOT, env=search_env(store), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True)
    try:
        info = wait_for_json(f"http://127.0.0.1:{port}/model", server)
        uri = f"sqlite:///{store / 'mlflow.db'}"
        site = mlflow.MlflowClient(uri, registry_uri=uri).get_model_version_by_alias(
            NAME, "site-test")
        assert str(info["version"]) == str(site.version)
    finally:
        interrupt_group(server)
