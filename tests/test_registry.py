"""`main` end to end (tune -> register -> evaluate) and the registered model from outside.

The session's smoke pipeline (conftest.pipeline_store), then: the run tree, the
model card, predictions in a fresh process, input dtypes and errors, the promotion gate,
`mlflow models predict` and `mlflow models serve` over HTTP on 127.0.0.1.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import mlflow
import numpy as np
import pytest
from conftest import SMOKE, copy_store, free_port, runs_of, search_env, use_store
from mlflow.exceptions import MlflowException
from PIL import Image

from mammo_core.config import load_experiment
from mammo_core.ensemble import Ensemble
from mammo_core.predictor import EnsemblePredictor
from tune.project import download_text
from tune.register import load_experts, promote, register_search, search_config

ROOT = Path(__file__).resolve().parents[1]
NAME = "mammo-microcal"
CHAMPION = f"models:/{NAME}@champion"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def store(pipeline_store, tmp_path_factory) -> Path:
    """This module's copy of the session's pipeline store: its tests add versions and runs
    to it on purpose (each building on the last), which no other module may see."""
    return copy_store(pipeline_store, tmp_path_factory.mktemp("registry_store") / "store")


@pytest.fixture
def client(store, monkeypatch) -> mlflow.MlflowClient:
    yield use_store(store, monkeypatch)
    while mlflow.active_run():
        mlflow.end_run()


@pytest.fixture(scope="module")
def patches(shared_data) -> np.ndarray:
    files = sorted((shared_data / "0").glob("*.png"))[:4] + sorted((shared_data / "1").glob("*.png"))[:4]
    return np.stack([np.asarray(Image.open(f)) for f in files])  # the stored uint8 pixels


def test_pipeline_is_one_finished_run_tree(store):
    runs = runs_of(store)
    assert Counter((r.data.tags.get("mammo.kind"), r.info.status) for r in runs) == {
        ("pipeline", "FINISHED"): 1, ("search", "FINISHED"): 1, ("fold", "FINISHED"): 2,
        ("trial", "FINISHED"): 2, ("register", "FINISHED"): 1, ("evaluate", "FINISHED"): 1}
    pipeline = next(r for r in runs if r.data.tags["mammo.kind"] == "pipeline")
    for kind in ("search", "register", "evaluate"):
        child = next(r for r in runs if r.data.tags["mammo.kind"] == kind)
        assert child.data.tags["mlflow.parentRunId"] == pipeline.info.run_id


def test_registry_run_compares_methods_and_the_evaluate_run_logs_figures(store, client):
    runs = runs_of(store)
    register = next(r for r in runs if r.data.tags["mammo.kind"] == "register")
    for method in ("average", "learned", "best_single"):
        for metric in ("auc", "accuracy", "sensitivity", "specificity", "f1", "f2"):
            assert 0 <= register.data.metrics[f"holdout_{method}_{metric}"] <= 1
    assert register.data.metrics["round_trip_max_abs_diff"] < 1e-5
    weights = [float(register.data.params[f"ensemble.weight.fold{k}"]) for k in range(2)]
    assert min(weights) >= 0 and sum(weights) == pytest.approx(1, abs=1e-3)
    evaluate = next(r for r in runs if r.data.tags["mammo.kind"] == "evaluate")
    figures = {a.path for a in client.list_artifacts(evaluate.info.run_id, "figures")}
    assert figures >= {"figures/roc.png", "figures/confusion.png",
                       "figures/misclassified.png", "figures/worst.png"}
    # the pipeline's evaluate step scores the hold-out the ensemble was fitted on: in-sample
    assert evaluate.data.metrics["eval_in_sample_auc"] == pytest.approx(
        register.data.metrics["holdout_auc_in_sample"])
    assert evaluate.data.tags["mammo.figures"].startswith("in-sample")
    assert not any(k.startswith("eval_") and not k.startswith("eval_in_sample_")
                   for k in evaluate.data.metrics)
    assert "roc_auc/auc" in evaluate.data.metrics  # from mlflow.models.evaluate


def test_the_cross_fitted_winner_is_registered_calibrated_with_a_threshold_interval(client):
    version = client.get_model_version(NAME, "1")
    register = client.get_run(version.tags["mammo.register_run"])
    method = register.data.params["ensemble.method"]
    aucs = {m: register.data.metrics[f"holdout_{m}_auc"] for m in ("average", "learned",
                                                                     "best_single")}
    assert aucs[method] == max(aucs.values())
    assert method in register.data.tags["mammo.ensemble_choice"]
    assert all(0 <= register.data.metrics[f"holdout_{m}_ece"] <= 1 for m in aucs)
    stored = json.loads(download_text(register.info.run_id, "ensemble.json"))
    assert stored["calibration"]["slope"] > 0
    low, high = (float(register.data.params[f"ensemble.threshold_{k}"]) for k in ("low", "high"))
    assert 0 <= low <= high <= 1  # the rule's spread over bootstrap resamples
    assert "bootstrap interval" in version.description and f"`{method}`" in version.description
    figures = {a.path for a in client.list_artifacts(register.info.run_id, "figures")}
    assert "figures/holdout_reliability.png" in figures


def test_register_and_evaluate_runs_log_explanation_figures(store, client):
    runs = runs_of(store)
    for kind in ("register", "evaluate"):
        run = next(r for r in runs if r.data.tags["mammo.kind"] == kind)
        figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures/explanations")}
        assert {"figures/explanations/normal.png",
                "figures/explanations/microcalcification.png"} <= figures, (kind, figures)


def test_champion_carries_a_model_card_and_provenance(client):
    version = client.get_model_version_by_alias(NAME, "champion")
    card = version.description
    assert "not for diagnosis" in card and "| learned |" in card and "threshold" in card
    for tag in ("mammo.search_run", "mammo.git_commit", "mammo.config_hash",
                "mammo.holdout_auc_cross_fitted", "mammo.holdout_auc_in_sample",
                "mammo.promotion"):
        assert version.tags[tag]


def test_a_fresh_process_predicts_like_the_in_process_ensemble(client, store, patches, tmp_path):
    version = client.get_model_version_by_alias(NAME, "champion")
    search_run = version.tags["mammo.search_run"]
    weights = json.loads(download_text(version.tags["mammo.register_run"], "ensemble.json"))
    trained = search_config(search_run)
    n_folds = trained.cross_validation.n_folds
    in_process = EnsemblePredictor(load_experts(search_run, n_folds), Ensemble.from_dict(weights),
                                   trained, bit_depth=8).predict(patches)
    np.save(tmp_path / "x.npy", patches)
    script = ("import sys, mlflow, numpy as np; m = mlflow.pyfunc.load_model(sys.argv[1]); "
              "m.predict(np.load(sys.argv[2])).to_csv(sys.argv[3], index=False)")
    subprocess.run([sys.executable, "-c", script, CHAMPION, str(tmp_path / "x.npy"),
                    str(tmp_path / "out.csv")], check=True, cwd=tmp_path, env=search_env(store))
    table = np.genfromtxt(tmp_path / "out.csv", delimiter=",", names=True)
    np.testing.assert_allclose(table["probability"], in_process["probability"], atol=1e-6)
    np.testing.assert_array_equal(table["label"], in_process["label"])
    for k in range(n_folds):
        np.testing.assert_allclose(table[f"expert_{k}"], in_process["experts"][:, k], atol=1e-6)


def test_uint8_float_and_channel_inputs_agree_and_bad_shapes_are_refused(client, patches):
    model = mlflow.pyfunc.load_model(CHAMPION)
    expected = model.predict(patches)["probability"].to_numpy()
    for variant in (patches / 255.0, patches[..., None], patches.astype(np.int64)):
        np.testing.assert_allclose(model.predict(variant)["probability"], expected, atol=1e-6)
    with pytest.raises(MlflowException, match=r"expected patches shaped \(N, 60, 60\)"):
        model.predict(np.zeros((2, 64, 64), np.uint8))
    with pytest.raises(MlflowException, match=r"float pixels must be intensities in \[0, 1\]"):
        model.predict(patches.astype(np.float64))


def test_promotion_gate_compares_cross_fitted_figures_on_the_same_hold_out_only(client, store):
    experiment = load_experiment(ROOT / SMOKE)
    first = client.get_model_version_by_alias(NAME, "champion")
    ours = float(first.tags["mammo.holdout_auc_cross_fitted"])
    register = client.get_run(first.tags["mammo.register_run"])
    method = register.data.params["ensemble.method"]
    # the gate's figure is the registered method's cross-fitted one, not the in-sample one
    assert ours == pytest.approx(register.data.metrics[f"holdout_{method}_auc"], abs=1e-6)
    assert "holdout_auc" not in register.data.metrics  # only ..._in_sample, named as such
    # The same search registered again scores exactly the champion's figure: promoted.
    again = register_search(experiment, first.tags["mammo.search_run"])
    assert (again.version, again.alias) == ("2", "champion")
    assert again.holdout_auc == pytest.approx(ours, abs=1e-6)
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "2"
    assert "cross-fitted hold-out AUC" in again.reason and ">=" in again.reason
    fingerprint = first.tags["mammo.holdout_fingerprint"]
    # A candidate below the champion on the same hold-out only becomes the challenger.
    alias, reason = promote(experiment, NAME, "1", again.holdout_auc - 0.05, fingerprint)
    assert alias == "challenger" and " < " in reason
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "2"
    assert str(client.get_model_version_by_alias(NAME, "challenger").version) == "1"
    assert client.get_model_version(NAME, "1").tags["mammo.promotion"] == reason
    # A better figure on another hold-out is not compared at all: challenger, and why.
    alias, reason = promote(experiment, NAME, "1", 1.0, "another-hold-out")
    assert alias == "challenger" and "not compared" in reason and "another hold-out" in reason
    assert str(client.get_model_version_by_alias(NAME, "champion").version) == "2"


def test_mlflow_models_predict_cli_scores_a_json_input(client, store, patches, tmp_path):
    (tmp_path / "input.json").write_text(json.dumps({"inputs": patches.tolist()}))
    subprocess.run(["mlflow", "models", "predict", "-m", CHAMPION, "-i", str(tmp_path / "input.json"),
                    "-t", "json", "-o", str(tmp_path / "out.json"), "--env-manager", "local"],
                   check=True, env=search_env(store), capture_output=True, timeout=300)
    rows = json.loads((tmp_path / "out.json").read_text())["predictions"]
    expected = mlflow.pyfunc.load_model(CHAMPION).predict(patches)
    np.testing.assert_allclose([r["probability"] for r in rows], expected["probability"], atol=1e-6)


def test_mlflow_models_serve_answers_invocations_on_loopback(client, store, patches):
    port = free_port()
    server = subprocess.Popen(["mlflow", "models", "serve", "-m", CHAMPION, "-h", "127.0.0.1",
                               "-p", str(port), "--env-manager", "local"], env=search_env(store),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        wait_until_up(f"http://127.0.0.1:{port}/ping", server)
        status, body = post(f"http://127.0.0.1:{port}/invocations", {"inputs": patches.tolist()})
        assert status == 200
        expected = mlflow.pyfunc.load_model(CHAMPION).predict(patches)["probability"]
        np.testing.assert_allclose([r["probability"] for r in body["predictions"]], expected,
                                   atol=1e-6)
        status, body = post(f"http://127.0.0.1:{port}/invocations",
                            {"inputs": np.zeros((1, 32, 32)).tolist()})
        assert status == 400 and "expected patches shaped" in body["message"]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)


def test_predict_entry_point_writes_a_csv_and_names_a_corrupt_file(store, shared_data, tmp_path):
    folder = tmp_path / "patches"
    folder.mkdir()
    for f in sorted((shared_data / "1").glob("*.png"))[:3]:
        (folder / f.name).write_bytes(f.read_bytes())
    command = [sys.executable, "-m", "tune.predict", "--config", SMOKE, "--input", str(folder),
               "--output", str(tmp_path / "out.csv")]
    subprocess.run(command, check=True, cwd=ROOT, env=search_env(store), capture_output=True)
    lines = (tmp_path / "out.csv").read_text().splitlines()
    assert lines[0].startswith("path,probability,label,expert_0") and len(lines) == 4
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    result = subprocess.run(command, cwd=ROOT, env=search_env(store), capture_output=True,
                            text=True)
    assert result.returncode == 2 and "broken.png" in result.stderr


def test_explain_entry_point_writes_maps_and_overlays_for_every_method(store, shared_data,
                                                                       tmp_path):
    folder = tmp_path / "patches"
    folder.mkdir()
    names = [f.name for f in sorted((shared_data / "1").glob("*.png"))[:2]]
    for name in names:
        (folder / name).write_bytes((shared_data / "1" / name).read_bytes())
    out = tmp_path / "explained"
    command = [sys.executable, "-m", "tune.explain", "--config", SMOKE, "--input", str(folder),
               "--output", str(out), "--method", "all"]
    result = subprocess.run(command, cwd=ROOT, env=search_env(store), capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    for name in names:
        for method in ("gradcam", "shap", "partition"):
            heatmap = np.load(out / f"{Path(name).stem}_{method}.npy")
            assert heatmap.shape == (60, 60) and np.all(np.isfinite(heatmap))
            assert (out / f"{Path(name).stem}_{method}.png").stat().st_size > 0
    rows = (out / "explanations.csv").read_text().splitlines()
    assert rows[0].startswith("file,method,probability,expected_value") and len(rows) == 7
    explain_run = next(r for r in runs_of(store) if r.data.tags.get("mammo.kind") == "explain")
    assert explain_run.info.status == "FINISHED"
    assert "gradcam_seconds_per_image" in explain_run.data.metrics


def sixteen_bit_copy(source: Path, target: Path) -> None:
    """Writes the 8-bit PNG `source` as a 16-bit PNG (x257: the same intensities)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(Image.open(source), np.uint16) * 257).save(target)


def test_an_8_bit_and_a_16_bit_copy_score_the_same_in_predict_evaluate_and_explain(
        store, client, shared_data, tmp_path):
    """Before, a folder holding both scored the 8-bit copy 0.017 instead of 0.999: the
    stack was promoted to uint16 and only then scaled."""
    mixed, alone = tmp_path / "mixed", tmp_path / "alone"
    pairs = []  # (8-bit file, its 16-bit copy) per class
    for label in ("0", "1"):
        source = sorted((shared_data / label).glob("*.png"))[-1]
        eight, sixteen = mixed / label / source.name, mixed / label / ("9" + source.name[1:])
        eight.parent.mkdir(parents=True)
        eight.write_bytes(source.read_bytes())
        sixteen_bit_copy(source, sixteen)
        (alone / label).mkdir(parents=True)
        (alone / label / source.name).write_bytes(source.read_bytes())
        pairs.append((str(eight), str(sixteen)))

    def entry(module: str, *args: str) -> None:
        result = subprocess.run([sys.executable, "-m", module, "--config", SMOKE, *args],
                                cwd=ROOT, env=search_env(store), capture_output=True, text=True)
        assert result.returncode == 0, result.stderr[-2000:]

    def by_path(table: Path | str) -> dict[str, float]:
        import pandas as pd
        frame = pd.read_csv(table)
        return dict(zip(frame[frame.columns[0]], frame["probability"]))

    entry("tune.predict", "--input", str(mixed), "--output", str(tmp_path / "mixed.csv"))
    entry("tune.predict", "--input", str(alone), "--output", str(tmp_path / "alone.csv"))
    entry("tune.explain", "--input", str(mixed), "--output", str(tmp_path / "maps"))
    entry("tune.evaluate", "--data-dir", str(mixed))
    evaluate = max((r for r in runs_of(store) if r.data.tags.get("mammo.kind") == "evaluate"),
                   key=lambda r: r.info.start_time)
    scored = {"predict": by_path(tmp_path / "mixed.csv"),
              "explain": by_path(tmp_path / "maps" / "explanations.csv"),
              "evaluate": by_path(client.download_artifacts(evaluate.info.run_id,
                                                            "predictions.csv", str(tmp_path)))}
    single = by_path(tmp_path / "alone.csv")
    for eight, sixteen in pairs:
        reference = single[eight.replace(str(mixed), str(alone))]
        for name, table in scored.items():
            assert table[eight] == pytest.approx(reference, abs=1e-5), name
            assert table[sixteen] == pytest.approx(reference, abs=1e-5), name


def test_explain_keeps_same_named_files_of_two_folders_apart_and_logs_only_its_own(
        store, shared_data, tmp_path):
    source = sorted((shared_data / "1").glob("*.png"))[0]
    folder, out = tmp_path / "patches", tmp_path / "explained"
    for sub in ("site a", "site,b"):
        (folder / sub).mkdir(parents=True)
    (folder / "site a" / source.name).write_bytes(source.read_bytes())
    sixteen_bit_copy(sorted((shared_data / "0").glob("*.png"))[0], folder / "site,b" / source.name)
    out.mkdir()
    (out / "left_over_gradcam.png").write_bytes(b"from an earlier run")
    result = subprocess.run([sys.executable, "-m", "tune.explain", "--config", SMOKE, "--input",
                             str(folder), "--output", str(out)], cwd=ROOT, env=search_env(store),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    maps = [np.load(out / sub / f"{source.stem}_gradcam.npy") for sub in ("site a", "site,b")]
    assert not np.allclose(maps[0], maps[1])  # two patches, two maps: none overwritten
    import pandas as pd
    table = pd.read_csv(out / "explanations.csv")  # the comma in a folder name stays one field
    assert sorted(table["file"]) == sorted(str(p) for p in folder.rglob("*.png"))
    run = max((r for r in runs_of(store) if r.data.tags.get("mammo.kind") == "explain"),
              key=lambda r: r.info.start_time)
    logged = mlflow.MlflowClient(f"sqlite:///{store / 'mlflow.db'}").list_artifacts(
        run.info.run_id, "explanations")
    assert "explanations/left_over_gradcam.png" not in {a.path for a in logged}
    assert {"explanations/site a", "explanations/site,b"} <= {a.path for a in logged}


def test_evaluate_and_explain_through_mlflow_run_with_the_default_model_uri(store, shared_data,
                                                                           tmp_path):
    """The README's lines, with no model_uri: `mlflow run` has logged model_uri='' on the
    project's run, so the resolved URI must go under another key (it used to fail with
    "Changing param values is not allowed"). The files have names of another source: each
    becomes its own group, with a line saying so."""
    folder = tmp_path / "labelled"
    for label in ("0", "1"):
        (folder / label).mkdir(parents=True)
        for i, source in enumerate(sorted((shared_data / label).glob("*.png"))[:2]):
            (folder / label / f"site B scan {label}-{i}.png").write_bytes(source.read_bytes())
    for entry, params in (("evaluate", [f"data_dir={folder}"]),
                          ("explain", [f"input={folder / '1'}", f"output={tmp_path / 'maps'}"])):
        args = [a for p in params for a in ("-P", p)]
        result = subprocess.run(["mlflow", "run", ".", "-e", entry, "--env-manager", "local",
                                 *args], cwd=ROOT, env=search_env(store), capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]
        if entry == "evaluate":
            assert "does not match data.filename_pattern" in result.stdout
            assert "each file is its own group here" in result.stdout
        run = max((r for r in runs_of(store) if r.data.tags.get("mammo.kind") == entry),
                  key=lambda r: r.info.start_time)
        assert run.info.status == "FINISHED"
        assert run.data.params["resolved_model_uri"] == CHAMPION


def test_a_config_that_disagrees_with_the_model_is_refused_naming_both(store, shared_data):
    """predict, explain, evaluate and recalibrate read classes, image size and
    preprocessing from the model; a config of another study is refused, not obeyed."""
    patch = sorted((shared_data / "1").glob("*.png"))[0]
    commands = {"tune.predict": ["--input", str(patch)], "tune.explain": ["--input", str(patch)],
                "tune.evaluate": ["--data-dir", str(shared_data)],
                "tune.recalibrate": ["--data-dir", str(shared_data)]}
    for module, args in commands.items():
        result = subprocess.run([sys.executable, "-m", module, "--config",
                                 "experiments/mias_normal_vs_abnormal_quick.yaml",
                                 "--model-uri", CHAMPION, *args], cwd=ROOT,
                                env=search_env(store), capture_output=True, text=True)
        assert result.returncode == 2, (module, result.stderr[-2000:])
        (line,) = [x for x in result.stderr.splitlines() if x.startswith("error:")]
        assert "disagrees with the model" in line and "data.layout: the config has mias" in line
        assert "trained with folders" in line, line


def test_register_without_a_search_says_so(tmp_path):
    result = subprocess.run([sys.executable, "-m", "tune.register", "--config", SMOKE],
                            cwd=ROOT, env=search_env(tmp_path), capture_output=True, text=True)
    assert result.returncode == 2
    assert "no finished search in experiment 'mammo-microcal-quick'" in result.stderr


def wait_until_up(url: str, server: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert server.poll() is None, "mlflow models serve exited"
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def post(url: str, payload: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, json.dumps(payload).encode(),
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())
