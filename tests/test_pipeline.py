"""The smoke `mlflow run .` (the `main` entry point) tells its story in the MLflow UI: named
runs, Markdown descriptions, dataset inputs per part, the data's first look, and system
metrics on the search run; all read back through MlflowClient from the real store."""
from __future__ import annotations

import mlflow
import pytest

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def runs(pipeline_store) -> tuple[mlflow.MlflowClient, dict]:
    """Returns (client, {kind: [runs]}) of the first pipeline in the store."""
    uri = f"sqlite:///{pipeline_store / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    every = [r for e in client.search_experiments() for r in client.search_runs(
        [e.experiment_id], order_by=["attributes.start_time ASC"])]
    main = next(r for r in every if r.data.tags.get("mammo.kind") == "pipeline")
    family = [r for r in every if r.info.start_time >= main.info.start_time]
    by_kind: dict[str, list] = {}
    for run in family:
        by_kind.setdefault(run.data.tags.get("mammo.kind", ""), []).append(run)
    return client, by_kind


def contexts(run) -> set[str]:
    return {tag.value for d in run.inputs.dataset_inputs for tag in d.tags
            if tag.key == "mlflow.data.context"}


def test_every_run_is_named_for_what_it_did(runs):
    _, by_kind = runs
    assert by_kind["pipeline"][0].info.run_name == "main-microcal-smoke"
    assert by_kind["search"][0].info.run_name == "search-microcal-smoke"
    assert by_kind["register"][0].info.run_name == "register-microcal-smoke"
    assert by_kind["evaluate"][0].info.run_name.startswith("evaluate-holdout-")
    assert sorted(r.info.run_name for r in by_kind["fold"]) == [f"fold{k}" for k in range(2)]


def test_search_fold_and_pipeline_runs_carry_a_markdown_description(runs):
    _, by_kind = runs
    search = by_kind["search"][0].data.tags["mlflow.note.content"]
    assert "| outer fold |" in search and "mean ± std" in search and "max pixel" in search
    assert "Best configs" in search and "figures/cv_roc.png" in search
    for fold in by_kind["fold"]:
        note = fold.data.tags["mlflow.note.content"]
        assert f"Outer fold {fold.data.tags['mammo.fold']}" in note and "| CNN expert |" in note
    assert "registered `mammo-microcal` v1" in by_kind["pipeline"][0].data.tags[
        "mlflow.note.content"]


def test_data_sets_are_dataset_inputs_with_the_fingerprint_and_the_part(runs):
    _, by_kind = runs
    search = by_kind["search"][0]
    assert contexts(search) == {"all", "holdout"}
    whole = next(d.dataset for d in search.inputs.dataset_inputs
                 if any(t.value == "all" for t in d.tags))
    assert whole.digest == search.data.params["data_fingerprint"] and whole.name == "microcal"
    for fold in by_kind["fold"]:
        assert contexts(fold) == {"train", "val", "test"}
        assert len({d.dataset.digest for d in fold.inputs.dataset_inputs}) == 3
    assert contexts(by_kind["register"][0]) == {"holdout"}
    assert contexts(by_kind["evaluate"][0]) == {"holdout"}


def test_the_search_logs_the_data_first_look_and_system_metrics(runs):
    client, by_kind = runs
    search = by_kind["search"][0]
    figures = {a.path for a in client.list_artifacts(search.info.run_id, "figures")}
    assert {"figures/data_examples.png", "figures/data_examples_filtered.png",
            "figures/data_histograms.png", "figures/data_part_labels.png"} <= figures
    assert any(name.startswith("system/cpu_utilization") for name in search.data.metrics)
