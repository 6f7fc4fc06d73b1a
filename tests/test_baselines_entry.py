"""The `baselines` entry point under `mlflow run`, on the folds of the quick pipeline's search."""
import csv
import io
import re
import subprocess
from collections import Counter

import pytest

from conftest import PROJECT_ROOT, copy_store, runs_of, search_env, use_store
from mammo_core.classifiers import CLASSIFIERS
from mammo_core.config import ConfigError, load_baselines
from tune.project import PLAN_ARTIFACT, download_text


@pytest.fixture(scope="module")
def baselines_store(pipeline_store, tmp_path_factory):
    """A copy of the pipeline store (the registry tests count its runs) after `-e baselines`."""
    folder = tmp_path_factory.mktemp("baselines") / "store"
    copy_store(pipeline_store, folder)
    result = subprocess.run(["mlflow", "run", ".", "--env-manager", "local", "-e", "baselines",
                             "-P", "config=experiments/wavelet_baselines_quick.yaml"],
                            cwd=PROJECT_ROOT, env=search_env(folder), capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    return folder, result.stdout


def test_every_classifier_is_one_finished_child_of_one_parent(baselines_store):
    folder, _ = baselines_store
    runs = [r for r in runs_of(folder) if r.data.tags.get("mammo.kind") in ("baselines", "baseline")]
    assert Counter((r.data.tags["mammo.kind"], r.info.status) for r in runs) == {
        ("baselines", "FINISHED"): 1, ("baseline", "FINISHED"): len(CLASSIFIERS)}
    parent = next(r for r in runs if r.data.tags["mammo.kind"] == "baselines")
    children = [r for r in runs if r.data.tags["mammo.kind"] == "baseline"]
    assert {r.data.tags["mlflow.parentRunId"] for r in children} == {parent.info.run_id}
    assert {r.data.tags["mammo.classifier"] for r in children} == set(CLASSIFIERS)
    for child in children:
        for metric in ("auc", "accuracy", "sensitivity", "specificity", "f1", "f2"):
            assert 0 <= child.data.metrics[f"cv_test_{metric}_mean"] <= 1
        assert {f"fold{k}.best" for k in range(2)} <= set(child.data.params)


def test_the_folds_are_the_searchs_and_the_comparison_includes_the_cnn(baselines_store,
                                                                       monkeypatch):
    folder, stdout = baselines_store
    client = use_store(folder, monkeypatch)
    runs = runs_of(folder)
    parent = next(r for r in runs if r.data.tags.get("mammo.kind") == "baselines")
    search = next(r for r in runs if r.data.tags.get("mammo.kind") == "search")
    assert parent.data.tags["mammo.search_run"] == search.info.run_id
    assert (download_text(parent.info.run_id, PLAN_ARTIFACT)
            == download_text(search.info.run_id, PLAN_ARTIFACT))
    table = list(csv.DictReader(io.StringIO(download_text(parent.info.run_id, "comparison.csv"))))
    assert {row["model"] for row in table} >= set(CLASSIFIERS) | {"CNN (search)"}
    means = [float(row["auc_mean"]) for row in table]
    assert means == sorted(means, reverse=True)
    cnn = next(row for row in table if row["model"] == "CNN (search)")
    assert float(cnn["auc_mean"]) == pytest.approx(search.data.metrics["cv_test_auc_mean"], abs=1e-6)
    assert [a.path for a in client.list_artifacts(parent.info.run_id, "figures")] == [
        "figures/ranking.png"]
    assert "| 1 |" in stdout and "cnn_auc_margin_over_best_classic" in parent.data.metrics


@pytest.mark.parametrize("old,new,message", [
    ("svm_rbf: {C: [1]}", "svm_poly: {C: [1]}", "unknown classifier 'classifiers.svm_poly'"),
    ("knn: {n_neighbors: [5]}", "knn: {k: [5]}", "unknown parameter 'classifiers.knn.k'"),
    ("threshold: 0.5", "thresh: 0.5", "unknown config key 'thresh'"),
    ("keep_levels: [3]", "keep_levels: [4]", "keep_levels within 1..level")])
def test_bad_baselines_configs_name_the_problem(tmp_path, old, new, message):
    good = (PROJECT_ROOT / "experiments" / "wavelet_baselines_quick.yaml").read_text()
    assert old in good
    path = tmp_path / "bad.yaml"
    path.write_text(good.replace(old, new))
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_baselines(path)
