"""The search end to end: real Ray, real SQLite store.

The run tree, summaries and figures are read from the session's smoke pipeline
(conftest.pipeline_store: 2 folds x 1 trial x 1 epoch); reusing configs works on a copy of
it; the interrupt-and-resume and worker-death tests run searches of their own.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import mlflow
import pytest
from conftest import SMOKE, config_variant, copy_store, runs_of, search_env

ROOT = Path(__file__).resolve().parents[1]
QUICK = "experiments/microcal_quick.yaml"
SEARCH_KINDS = ("search", "fold", "trial")
pytestmark = pytest.mark.slow


def artifact_text(store: Path, run_id: str, path: str) -> str:
    client = mlflow.MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    return Path(client.download_artifacts(run_id, path, str(store))).read_text()


def kinds(runs) -> Counter:
    """Returns how many runs of each (search kind, status) there are."""
    return Counter((r.data.tags.get("mammo.kind"), r.info.status) for r in runs
                   if r.data.tags.get("mammo.kind") in SEARCH_KINDS)


def start_search(store: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tune.search", "--config", SMOKE, *args],
                            cwd=ROOT, env=search_env(store), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def finish(process: subprocess.Popen, timeout: float = 600) -> str:
    out, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, out[-3000:]
    return out


@pytest.fixture
def searched(pipeline_store) -> Path:
    """The session's smoke pipeline, whose search ran through `./dev.sh run` (read only)."""
    return pipeline_store


def test_run_tree_is_complete_and_finished(searched):
    runs = runs_of(searched)
    assert kinds(runs) == {("search", "FINISHED"): 1, ("fold", "FINISHED"): 2,
                           ("trial", "FINISHED"): 2}
    parent = next(r for r in runs if r.data.tags.get("mammo.kind") == "search")
    folds = [r for r in runs if r.data.tags.get("mammo.kind") == "fold"]
    trials = [r for r in runs if r.data.tags.get("mammo.kind") == "trial"]
    assert {f.data.tags["mlflow.parentRunId"] for f in folds} == {parent.info.run_id}
    fold_ids = {f.info.run_id for f in folds}
    assert {t.data.tags["mlflow.parentRunId"] for t in trials} == fold_ids
    # the same names in trials and folds, so the compare view lines up
    assert {"hyperparameters.init", "hyperparameters.learning_rate"} <= set(trials[0].data.params)
    assert "epoch_val_auc" in trials[0].data.metrics and "val_auc" in trials[0].data.metrics
    for trial in trials:  # where it ran and its size, written with its first epoch
        assert trial.data.tags["mammo.node_ip"] and trial.data.metrics["n_weights"] > 0
    # the tracking store's cost to each fold's search, measured by the mirror itself
    assert all(0 < f.data.metrics["trial_mirror_seconds"] < 60 for f in folds)


def test_parent_logs_cv_summary_baselines_and_figures(searched):
    runs = runs_of(searched)
    parent = next(r for r in runs if r.data.tags.get("mammo.kind") == "search")
    metrics = parent.data.metrics
    for name in ("test_auc", "test_sensitivity", "test_specificity", "test_f2",
                 "baseline_max_pixel_test_auc", "baseline_logreg_test_auc",
                 "test_auc_margin_over_logreg"):
        assert f"cv_{name}_mean" in metrics and f"cv_{name}_std" in metrics
    client = mlflow.MlflowClient(f"sqlite:///{searched / 'mlflow.db'}")
    paths = {a.path for a in client.list_artifacts(parent.info.run_id, "figures")}
    assert {"figures/cv_roc.png", "figures/cv_confusion.png"} <= paths
    trial_ids = {r.info.run_id for r in runs if r.data.tags.get("mammo.kind") == "trial"}
    for k in range(2):
        assert parent.data.tags[f"mammo.best_trial.fold{k}"] in trial_ids
    plan = json.loads(artifact_text(searched, parent.info.run_id, "fold_plan.json"))
    assert len(plan["folds"]) == 2 and plan["group_by"] == "case"


def test_search_run_logs_time_to_quality_per_fold_and_its_figure(searched):
    """Best-so-far validation AUC against whole seconds since the search started: one
    curve per fold, never decreasing, later folds later on the clock, and the figure."""
    runs = runs_of(searched)
    parent = next(r for r in runs if r.data.tags.get("mammo.kind") == "search")
    client = mlflow.MlflowClient(f"sqlite:///{searched / 'mlflow.db'}")
    trials = [r for r in runs if r.data.tags.get("mammo.kind") == "trial"]
    wall = (parent.info.end_time - parent.info.start_time) / 1000
    previous_end = -1
    for k in range(2):
        history = sorted(client.get_metric_history(parent.info.run_id,
                                                   f"best_val_auc_so_far.fold{k}"),
                         key=lambda m: (m.step, m.timestamp))
        values, steps = [m.value for m in history], [m.step for m in history]
        assert values and values == sorted(values)  # never decreasing
        assert len(set(values[:-1])) == len(values) - 1  # a point per gain, and the end
        assert 0 <= steps[0] and steps[-1] <= wall and steps[0] >= previous_end
        previous_end = steps[-1]
        best = max(t.data.metrics["val_auc"] for t in trials if t.data.tags["mammo.fold"] == str(k))
        assert values[-1] == pytest.approx(best)
    paths = {a.path for a in client.list_artifacts(parent.info.run_id, "figures")}
    assert "figures/time_to_quality.png" in paths
    assert "time_to_quality" in parent.data.tags["mlflow.note.content"]


def test_fold_runs_hold_the_expert_and_its_test_evaluation(searched):
    runs = runs_of(searched)
    client = mlflow.MlflowClient(f"sqlite:///{searched / 'mlflow.db'}")
    for fold in (r for r in runs if r.data.tags.get("mammo.kind") == "fold"):
        assert {"test_auc", "test_f2", "baseline_logreg_test_auc"} <= set(fold.data.metrics)
        figures = {a.path for a in client.list_artifacts(fold.info.run_id, "figures")}
        assert {"figures/roc_test.png", "figures/confusion_test.png",
                "figures/learning_curves.png"} <= figures
        models = client.search_logged_models(
            [fold.info.experiment_id], filter_string=f"source_run_id = '{fold.info.run_id}'")
        assert [m.name for m in models] == ["expert"]


def test_reuse_configs_retrains_each_folds_best_config(pipeline_store, tmp_path):
    store = copy_store(pipeline_store, tmp_path / "store")
    parent = next(r for r in runs_of(store) if r.data.tags.get("mammo.kind") == "search")
    out = finish(start_search(store, "--reuse-configs-from", parent.info.run_id))
    assert "FINISHED" in out
    runs = runs_of(store)
    reuse = next(r for r in runs if r.data.params.get("mode") == "reuse")
    folds = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == reuse.info.run_id]
    best = json.loads(artifact_text(store, parent.info.run_id, "search/best_configs.json"))
    for fold in folds:
        k = fold.data.tags["mammo.fold"]
        trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == fold.info.run_id]
        assert len(trials) == 1
        assert trials[0].data.params["hyperparameters.init"] == str(best[k]["init"])


def test_reusing_configs_of_a_search_with_other_folds_is_refused(pipeline_store, tmp_path):
    """A fold's best config is only that fold's best on that fold's images: a search that
    split the data otherwise (here another seed) must not lend its configs."""
    store = copy_store(pipeline_store, tmp_path / "store")
    parent = next(r for r in runs_of(store) if r.data.tags.get("mammo.kind") == "search")
    other = config_variant(SMOKE, tmp_path / "other_seed.yaml", split={"seed": 7})
    result = subprocess.run([sys.executable, "-m", "tune.search", "--config", other,
                             "--reuse-configs-from", parent.info.run_id], cwd=ROOT,
                            env=search_env(store), capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-2000:]
    assert "split the data into other folds" in result.stderr
    assert len([r for r in runs_of(store) if r.data.tags.get("mammo.kind") == "search"]) == 1


def test_sigterm_then_resume_loses_and_duplicates_nothing(tmp_path):
    process = start_search(tmp_path)
    for line in process.stdout:
        if line.startswith("fold 2/2"):  # fold 1 has finished
            break
    process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=180)
    assert process.returncode == 130, out[-2000:]
    assert "resume" in out
    interrupted = kinds(runs_of(tmp_path))
    assert not any(status == "RUNNING" for _, status in interrupted), (interrupted, out[-3000:])
    assert interrupted[("search", "KILLED")] == 1 and interrupted[("fold", "FINISHED")] >= 1
    first_fold = next(r for r in runs_of(tmp_path) if r.data.tags.get("mammo.fold") == "0"
                      and r.data.tags.get("mammo.kind") == "fold")

    out = finish(start_search(tmp_path, "--resume", "true"))
    assert "already finished, reused" in out
    runs = runs_of(tmp_path)
    assert kinds(runs) == {("search", "FINISHED"): 1, ("fold", "FINISHED"): 2,
                           ("trial", "FINISHED"): 2}
    again = next(r for r in runs if r.info.run_id == first_fold.info.run_id)
    assert again.info.end_time == first_fold.info.end_time  # fold 1 was not recomputed


def test_a_trial_whose_worker_dies_is_retried(tmp_path):
    # 2 folds of 2 trials that all run 8 epochs: a wide window to kill a worker mid-trial
    path = config_variant(QUICK, tmp_path / "long_trials.yaml", cross_validation={"n_folds": 2},
                          search={"max_epochs": 8, "grace_period": 8})
    process = subprocess.Popen([sys.executable, "-m", "tune.search", "--config", path],
                               cwd=ROOT, env=search_env(tmp_path), stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    for line in process.stdout:  # the first status line: both trials run and have reported
        if line.startswith("fold 1/2 | trials 0/2 done, 2 running"):
            break
    assert kill_one_trial_worker(str(tmp_path).encode()), "no trial worker of this search"
    finish(process)
    runs = runs_of(tmp_path)
    assert kinds(runs) == {("search", "FINISHED"): 1, ("fold", "FINISHED"): 2,
                           ("trial", "FINISHED"): 4}
    retried = [r for r in runs if int(r.data.tags.get("mammo.retries", 0)) >= 1]
    assert len(retried) == 1


def kill_one_trial_worker(marker: bytes) -> int | None:
    """SIGKILLs one running trial process whose environment names this test's store."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if cmdline.startswith(b"ray::ImplicitFunc.train") and marker in environ:
            os.kill(int(entry), signal.SIGKILL)
            return int(entry)
    return None


def test_a_fold_interrupted_before_tune_saved_its_searcher_is_started_again(tmp_path):
    """Tune pickles the Tuner when a fold starts and the searcher's state only with its
    first checkpoint: resuming in between restored a searcher without its space (Optuna
    then failed on its first suggestion). Such a fold is not restorable; a saved one is."""
    from tune.fold import restorable

    fold = tmp_path / "fold0"
    fold.mkdir()
    assert not restorable(fold, searched=True)  # nothing saved at all
    (fold / "tuner.pkl").write_bytes(b"")
    assert not restorable(fold, searched=True)  # the Tuner, not yet the searcher
    assert restorable(fold, searched=False)  # a fixed config has no searcher to lose
    (fold / "searcher-state-2026-12-03_16-00-00.pkl").write_bytes(b"")
    assert restorable(fold, searched=True)


def test_a_search_under_the_published_protocol_says_so_and_counts_the_leak(tmp_path):
    """The smoke search with split.protocol published on the shared microcal folders (no
    partition shipped: the image-level 20 % the publications drew): every fold is scored
    on that one test side, and the run says which protocol and how much it leaks."""
    config = config_variant(SMOKE, tmp_path / "published.yaml",
                            split={"protocol": "published", "published_test_fraction": 0.2})
    out = finish(subprocess.Popen([sys.executable, "-m", "tune.search", "--config", config],
                                  cwd=ROOT, env=search_env(tmp_path), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True))
    (line,) = [x for x in out.splitlines() if x.startswith("published protocol:")]
    runs = runs_of(tmp_path)
    (search,) = [r for r in runs if r.data.tags.get("mammo.kind") == "search"]
    folds = [r for r in runs if r.data.tags.get("mammo.kind") == "fold"]
    leaks = {k: v for k, v in search.data.metrics.items() if k.startswith("published_test")}
    assert leaks["published_test_images"] == 160
    # image-level crops of overlapping ROIs: most test images share their ROI with training
    assert leaks["published_test_images_sharing_roi"] > 80
    assert f"{leaks['published_test_images_sharing_roi']:.0f} an ROI" in line
    assert search.data.params["split.protocol"] == "published"
    assert "Protocol `published`" in search.data.tags["mlflow.note.content"]
    assert {f.data.params["fold.test_images"] for f in folds} == {"160"}
