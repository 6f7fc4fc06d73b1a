"""The `train` entry point end to end: through the mlflow CLI and as a module."""
from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest

from conftest import child_env

ROOT = Path(__file__).resolve().parents[1]
QUICK = "experiments/microcal_quick.yaml"


def env_for(uri: str) -> dict[str, str]:
    return child_env(uri, TF_CPP_MIN_LOG_LEVEL="2")


def all_runs(uri: str):
    client = mlflow.MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(experiments)


@pytest.mark.slow
def test_mlflow_run_train_finishes_with_metrics_figures_and_model(tracking_store):
    result = subprocess.run(
        ["mlflow", "run", ".", "-e", "train", "--env-manager", "local",
         "--experiment-name", "entry-test", "-P", f"config={QUICK}"],
        cwd=ROOT, env=env_for(tracking_store), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "epoch 1/2" in result.stdout and "ETA" in result.stdout
    (run,) = all_runs(tracking_store)
    assert run.info.status == "FINISHED"
    for name in ("test_auc", "test_sensitivity", "test_specificity", "test_f2", "val_auc",
                 "data_all_images"):
        assert name in run.data.metrics
    assert run.data.metrics["data_all_images"] == 797
    assert run.data.params["data_fingerprint"]
    client = mlflow.MlflowClient(tracking_store)
    assert len(client.get_metric_history(run.info.run_id, "epoch_val_auc")) >= 1
    artifacts = {a.path for folder in ("figures", "split", "config", "data")
                 for a in client.list_artifacts(run.info.run_id, folder)}
    assert {"figures/roc_test.png", "figures/confusion_test.png",
            "figures/learning_curves.png", "split/assignments.csv",
            "config/experiment.yaml", "data/summary.yaml"} <= artifacts
    (model,) = mlflow.search_logged_models(experiment_ids=[run.info.experiment_id],
                                           output_format="list")
    assert model.source_run_id == run.info.run_id


def run_module(args: list[str], uri: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tune.train", *args], cwd=ROOT,
                          env=env_for(uri), capture_output=True, text=True, timeout=300)


def test_bad_config_key_fails_before_any_run(tracking_store, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text((ROOT / QUICK).read_text().replace("batch_size:", "batchsize:"))
    result = run_module(["--config", str(bad)], tracking_store)
    assert result.returncode == 2
    assert "unknown config key 'training.batchsize'" in result.stderr
    assert all_runs(tracking_store) == []


def test_bad_data_dir_ends_the_run_failed_with_a_clear_message(tracking_store, tmp_path):
    result = run_module(["--config", QUICK, "--data-dir", str(tmp_path / "nope")], tracking_store)
    assert result.returncode == 2
    assert f"data folder from argument does not exist: {tmp_path / 'nope'}" in result.stderr
    (run,) = all_runs(tracking_store)
    assert run.info.status == "FAILED"
    assert run.data.params["preprocessing.wavelet.family"] == "sym3"  # what was logged stays


@pytest.mark.slow
def test_sigterm_during_training_ends_the_run_killed(tracking_store):
    process = subprocess.Popen([sys.executable, "-m", "tune.train", "--config", QUICK],
                               cwd=ROOT, env=env_for(tracking_store), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        for line in process.stdout:  # wait until training has started
            if line.startswith("epoch 1/"):
                break
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=120) != 0
    finally:
        process.kill()
    (run,) = all_runs(tracking_store)
    assert run.info.status == "KILLED"
