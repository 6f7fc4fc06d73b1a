"""`adapt` on the smoke pipeline's champion: unlabelled site folders of shared patches
(contrast x1.5, and unshifted), a site version that maps the patches back, the identity
for an unshifted site, a refusal for a handful of patches, and the site version served."""
from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
from conftest import copy_store, free_port, runs_of, search_env, stop_serving, use_store
from PIL import Image
from ray import serve
from test_families_search import post

from mammo_core import metrics
from mammo_core.images import quantize
from mammo_core.shift import Shift, combined
from serve.server import deploy
from serve.settings import ServeSettings
from tune.cluster import start_ray

ROOT = Path(__file__).resolve().parents[1]
NAME = "mammo-microcal"
pytestmark = pytest.mark.slow


def site_patches(shared_data: Path, normal: int = 40, abnormal: int = 10):
    """Returns (8-bit patches, labels, file names): the last files of each class, 20 %
    abnormal (6 cases)."""
    files = (sorted((shared_data / "0").glob("*.png"))[-normal:]
             + sorted((shared_data / "1").glob("*.png"))[-abnormal:])
    pixels = np.stack([np.asarray(Image.open(f)) for f in files])
    return pixels, np.array([0] * normal + [1] * abnormal), [f.name for f in files]


def write_flat(folder: Path, pixels: np.ndarray, names: list[str] | None = None) -> Path:
    """Writes patches into one folder, no class folders: a site's batch, under `names`
    (the study's, which give each patch's case) or names that give none."""
    folder.mkdir(parents=True)
    for k, image in enumerate(pixels):
        Image.fromarray(image).save(folder / (names[k] if names else f"scan_{k:03d}.png"))
    return folder


def run_adapt(store: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tune.adapt", *args], cwd=ROOT,
                          env=search_env(store), capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def adapted(pipeline_store, shared_data, tmp_path_factory):
    """A copy of the smoke store after `mlflow run . -e adapt` on a contrast x1.5 site and
    `python -m tune.adapt` on an unshifted one under the study's file names (which give
    their cases); returns (store, pixels, labels, shifted)."""
    store = tmp_path_factory.mktemp("adapt") / "store"
    copy_store(pipeline_store, store)
    pixels, labels, names = site_patches(shared_data)
    shifted = quantize(combined(pixels / np.float32(255), (Shift("contrast", 1.5),)), 8)
    result = subprocess.run(
        ["mlflow", "run", ".", "--env-manager", "local", "-e", "adapt", "-P",
         f"data_dir={write_flat(store.parent / 'clinic', shifted)}", "-P", "site=clinic",
         "-P", "bootstrap=60"],
        cwd=ROOT, env=search_env(store), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert "registered mammo-microcal v2 -> @site-clinic" in result.stdout
    same = run_adapt(store, "--data-dir", str(write_flat(store.parent / "same", pixels, names)),
                     "--site", "same", "--bootstrap", "60")
    assert same.returncode == 0, (same.stdout + same.stderr)[-3000:]
    assert "identity: the data show no shift" in same.stdout
    assert "6 cases by their file names" in same.stdout and "of 6 cases" in same.stdout
    return store, pixels, labels, shifted


def probabilities(uri: str, pixels: np.ndarray) -> np.ndarray:
    return mlflow.pyfunc.load_model(uri).predict(pixels)["probability"].to_numpy()


def test_the_site_version_maps_the_site_back_onto_the_training_scale(adapted, monkeypatch):
    store, pixels, labels, shifted = adapted
    client = use_store(store, monkeypatch)
    champion = client.get_model_version_by_alias(NAME, "champion")
    threshold = json.loads(Path(mlflow.artifacts.download_artifacts(
        f"models:/{NAME}/{champion.version}/artifacts/ensemble.json")).read_text())["threshold"]
    as_sent = probabilities(f"models:/{NAME}@champion", shifted)
    mapped = probabilities(f"models:/{NAME}@site-clinic", shifted)
    original = probabilities(f"models:/{NAME}@champion", pixels)
    # the site version scores the shifted patches nearly as the champion scores the originals
    assert np.abs(mapped - original).mean() < 0.35 * np.abs(as_sent - original).mean()
    ba = {name: metrics.balanced_accuracy(metrics.binary_metrics(labels, p, threshold))
          for name, p in (("as sent", as_sent), ("mapped", mapped))}
    assert ba["mapped"] >= ba["as sent"], ba
    site = client.get_model_version_by_alias(NAME, "site-clinic")
    assert "adapted to site `clinic`" in site.description and "contrast gain 1." in site.description
    assert site.tags["mammo.adapted_from"] == f"models:/{NAME}@champion"


def test_an_unshifted_site_version_scores_as_the_champion(adapted, monkeypatch):
    store, pixels, _, _ = adapted
    use_store(store, monkeypatch)
    np.testing.assert_allclose(probabilities(f"models:/{NAME}@site-same", pixels),
                               probabilities(f"models:/{NAME}@champion", pixels), atol=1e-3)


def test_the_run_logs_the_mapping_and_ends_finished(adapted):
    store = adapted[0]
    runs = [r for r in runs_of(store) if r.data.tags.get("mammo.kind") == "adapt"]
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    clinic = next(r for r in runs if r.data.tags["mammo.site"] == "clinic")
    assert 1.3 < clinic.data.metrics["gain_estimate"] < 1.7
    assert clinic.data.metrics["gain_low"] < clinic.data.metrics["gain_high"]
    assert {"estimated_share_0", "estimated_share_1"} <= set(clinic.data.metrics)
    same = next(r for r in runs if r.data.tags["mammo.site"] == "same")
    # the bootstrap drew whole cases where file names gave them, patches where not
    assert (clinic.data.params["adapt.cases"], same.data.params["adapt.cases"]) == ("unknown", "6")


def test_a_handful_of_patches_is_refused_and_no_run_is_left_running(adapted, tmp_path):
    store, pixels, _, _ = adapted
    result = run_adapt(store, "--data-dir", str(write_flat(tmp_path / "few", pixels[:5])),
                       "--site", "few")
    assert result.returncode == 2
    assert "5 patches are too few" in result.stderr
    assert all(r.info.status != "RUNNING" for r in runs_of(store))


def test_serve_loads_the_site_version(adapted, monkeypatch):
    store, _, _, shifted = adapted
    use_store(store, monkeypatch)
    expected = probabilities(f"models:/{NAME}@site-clinic", shifted[:3])
    port = free_port()
    start_ray()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        deploy(ServeSettings(model_uri=f"models:/{NAME}@site-clinic", port=port,
                             tracking_uri=f"sqlite:///{store / 'mlflow.db'}"))
        images = []
        for image in shifted[:3]:
            out = io.BytesIO()
            Image.fromarray(image).save(out, format="PNG")
            images.append(base64.b64encode(out.getvalue()).decode())
        answer = post(f"http://127.0.0.1:{port}/predict", json.dumps({"images": images}).encode())
        got = [p["probability"] for p in answer["predictions"]]
        np.testing.assert_allclose(got, expected, atol=1e-5)
    finally:
        stop_serving()


def test_folders_of_dicom_are_read_by_predict_and_evaluate(adapted, tmp_path):
    """The champion scores DICOM patches as it scores the same pixels as PNG: `predict` on
    a folder of .dcm files, `evaluate` on class folders of them."""
    from dicom_fixtures import write_dicom

    store, pixels, labels, _ = adapted
    (tmp_path / "png").mkdir()
    chosen = np.r_[0:6, len(pixels) - 6:len(pixels)]  # six of each class
    for k in chosen:
        write_dicom(tmp_path / "site" / str(labels[k]) / f"scan_{k:02d}.dcm", pixels[k])
        Image.fromarray(pixels[k]).save(tmp_path / "png" / f"scan_{k:02d}.png")
    out = {}
    for name in ("site", "png"):
        result = subprocess.run(
            [sys.executable, "-m", "tune.predict", "--input", str(tmp_path / name), "--output",
             str(tmp_path / f"{name}.csv")], cwd=ROOT, env=search_env(store),
            capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        out[name] = np.loadtxt(tmp_path / f"{name}.csv", delimiter=",", skiprows=1,
                               usecols=1)
    np.testing.assert_allclose(out["site"], out["png"], atol=1e-6)
    result = subprocess.run([sys.executable, "-m", "tune.evaluate", "--data-dir",
                             str(tmp_path / "site")], cwd=ROOT, env=search_env(store),
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "evaluation: auc" in result.stdout
