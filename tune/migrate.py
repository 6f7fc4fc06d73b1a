"""Copying one tracking store into another: a SQLite `mlflow.db` into the team server.

    ./dev.sh server migrate mlflow.db            # into the server on 127.0.0.1:5000
    python -m tune.migrate --source sqlite:///mlflow.db --target http://127.0.0.1:5000

MLflow has no store-to-store copy (`mlflow db upgrade` only migrates a schema in place;
`mlflow-export-import` is a separate project), so this copies through two MlflowClients:
experiments (by name), runs (name, tags, params, every metric's full history, dataset
inputs, artifacts, status and times, parent links), the files of the models a run logged
(as that run's artifacts under the model's name, so `runs:/<run>/<name>` loads them),
registered models with their versions (files, description, tags) and aliases. Run ids
change; a copied run carries `mammo.migrated_from` = its old id. Copying twice copies
twice: migrate into an empty server.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import mlflow
from mlflow.entities import Metric, Param, ViewType

BATCH = 500  # metrics per log_batch call (MLflow accepts up to 1000)
PARENT, RUN_NAME = "mlflow.parentRunId", "mlflow.runName"


def clients(source: str, target: str) -> tuple[mlflow.MlflowClient, mlflow.MlflowClient]:
    return (mlflow.MlflowClient(source, registry_uri=source),
            mlflow.MlflowClient(target, registry_uri=target))


def all_runs(client: mlflow.MlflowClient, experiment_id: str) -> list:
    """Returns every run of the experiment, oldest first (all pages)."""
    runs, token = [], None
    while True:
        page = client.search_runs([experiment_id], run_view_type=ViewType.ACTIVE_ONLY,
                                  max_results=1000, order_by=["attributes.start_time ASC"],
                                  page_token=token)
        runs += list(page)
        token = page.token
        if not token:
            return runs


def copy_run(src: mlflow.MlflowClient, dst: mlflow.MlflowClient, run, experiment_id: str) -> str:
    """Copies one run (without its parent link); returns the new run id."""
    old = run.info.run_id
    tags = {k: v for k, v in run.data.tags.items() if k != PARENT}
    new = dst.create_run(experiment_id, start_time=run.info.start_time, run_name=run.info.run_name,
                         tags=tags | {"mammo.migrated_from": old}).info.run_id
    params = [Param(k, v) for k, v in run.data.params.items()]
    for i in range(0, len(params), 100):
        dst.log_batch(new, params=params[i:i + 100])
    history = [Metric(m.key, m.value, m.timestamp, m.step)
               for key in run.data.metrics for m in src.get_metric_history(old, key)]
    for i in range(0, len(history), BATCH):
        dst.log_batch(new, metrics=history[i:i + BATCH])
    if run.inputs and run.inputs.dataset_inputs:
        dst.log_inputs(new, datasets=list(run.inputs.dataset_inputs))
    with tempfile.TemporaryDirectory() as folder:
        if src.list_artifacts(old):
            dst.log_artifacts(new, src.download_artifacts(old, "", folder))
        for model in logged_models(src, run):
            path = mlflow.artifacts.download_artifacts(artifact_uri=model.artifact_location,
                                                       dst_path=str(Path(folder) / model.model_id))
            dst.log_artifacts(new, path, artifact_path=model.name)
    if run.info.status in ("FINISHED", "FAILED", "KILLED"):
        dst.set_terminated(new, run.info.status, end_time=run.info.end_time)
    return new


def logged_models(client: mlflow.MlflowClient, run) -> list:
    """Returns the models the run logged (MLflow 3 keeps their files outside the run's)."""
    return list(client.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}'"))


def copy_experiments(src: mlflow.MlflowClient, dst: mlflow.MlflowClient) -> dict[str, str]:
    """Copies every active experiment and its runs; returns {old run id: new run id}."""
    ids: dict[str, str] = {}
    parents: dict[str, str] = {}
    for experiment in src.search_experiments(view_type=ViewType.ACTIVE_ONLY):
        existing = dst.get_experiment_by_name(experiment.name)
        target = existing.experiment_id if existing else dst.create_experiment(
            experiment.name, tags=experiment.tags)
        for run in all_runs(src, experiment.experiment_id):
            ids[run.info.run_id] = copy_run(src, dst, run, target)
            if PARENT in run.data.tags:
                parents[run.info.run_id] = run.data.tags[PARENT]
    for child, parent in parents.items():
        if parent in ids:
            dst.set_tag(ids[child], PARENT, ids[parent])
    return ids


def copy_registry(src: mlflow.MlflowClient, dst: mlflow.MlflowClient,
                  ids: dict[str, str]) -> int:
    """Copies registered models, their versions (files in the copied run) and aliases;
    returns the number of versions copied."""
    copied = 0
    for model in src.search_registered_models():
        if dst.search_registered_models(f"name = '{model.name}'"):
            raise ValueError(f"registered model {model.name} already exists in the target")
        dst.create_registered_model(model.name, tags=model.tags, description=model.description)
        numbers = {}
        versions = sorted(src.search_model_versions(f"name = '{model.name}'"),
                          key=lambda v: int(v.version))
        for version in versions:
            run = ids.get(version.run_id) or dst.create_run(
                dst.get_experiment_by_name("Default").experiment_id,
                run_name=f"migrated-{model.name}-v{version.version}").info.run_id
            path = f"registered/{model.name}/v{version.version}"
            with tempfile.TemporaryDirectory() as folder:
                files = mlflow.artifacts.download_artifacts(
                    artifact_uri=src.get_model_version_download_uri(model.name, version.version),
                    dst_path=folder)
                dst.log_artifacts(run, files, artifact_path=path)
            new = dst.create_model_version(model.name, f"{dst.get_run(run).info.artifact_uri}/{path}",
                                           run_id=run, tags=version.tags,
                                           description=version.description)
            numbers[str(version.version)] = new.version
            copied += 1
        for alias, version in model.aliases.items():
            dst.set_registered_model_alias(model.name, alias, numbers[str(version)])
    return copied


def migrate_store(source: str, target: str) -> str:
    """Copies the store at `source` into `target`; returns a one-line summary."""
    src, dst = clients(source, target)
    ids = copy_experiments(src, dst)
    versions = copy_registry(src, dst, ids)
    return (f"migrated {len(ids)} runs and {versions} model versions from {source} to "
            f"{target} (each run tagged mammo.migrated_from = its old id)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="tracking URI to copy from")
    parser.add_argument("--target", required=True, help="tracking URI to copy into")
    args = parser.parse_args(argv)
    print(migrate_store(args.source, args.target))
    return 0


if __name__ == "__main__":
    sys.exit(main())
