"""Copying one tracking store into another: a SQLite `mlflow.db` into the team server.

    ./dev.sh server migrate mlflow.db            # into the server on 127.0.0.1:5000
    python -m tune.migrate --source sqlite:///mlflow.db --target http://127.0.0.1:5000

MLflow has no store-to-store copy (`mlflow db upgrade` only migrates a schema in place;
`mlflow-export-import` is a separate project), so this copies through two MlflowClients:
experiments (by name), runs (name, tags, params, every metric's full history, dataset
inputs, artifacts, status and times, parent links), the files of the models a run logged
(as that run's artifacts under the model's name, so `runs:/<run>/<name>` loads them),
registered models with their versions (files, description, tags) and aliases.

Run ids change: a copied run carries `mammo.migrated_from` = its old id, and every
reference to a copied run is rewritten to the new id (tags such as `mammo.register_run`
and `mammo.search_run` on runs and versions, params logged after the run they name,
parent links, a version's run). A migration can be run again and resumes one that was
interrupted: a run is complete once it carries `mammo.migration_complete` (a copy without
it is deleted and made again), a version once the target has one tagged
`mammo.migrated_from_version`; what is complete is never copied twice.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import mlflow
from mlflow.entities import Metric, Param, ViewType

BATCH = 500  # metrics per log_batch call (MLflow accepts up to 1000)
PARENT = "mlflow.parentRunId"
FROM, COMPLETE = "mammo.migrated_from", "mammo.migration_complete"
VERSION_FROM = "mammo.migrated_from_version"


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


def remapped(values: dict[str, str], ids: dict[str, str]) -> dict[str, str]:
    """Returns `values` with every value that is a copied run's old id replaced by its new one."""
    return {k: ids.get(v, v) for k, v in values.items()}


def copy_run(src: mlflow.MlflowClient, dst: mlflow.MlflowClient, run, experiment_id: str,
             ids: dict[str, str]) -> str:
    """Copies one run (without its parent link; references to runs copied before it
    remapped); returns the new run id once the copy is complete."""
    old = run.info.run_id
    tags = remapped({k: v for k, v in run.data.tags.items() if k != PARENT}, ids)
    new = dst.create_run(experiment_id, start_time=run.info.start_time, run_name=run.info.run_name,
                         tags=tags | {FROM: old}).info.run_id
    params = [Param(k, v) for k, v in remapped(run.data.params, ids).items()]
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
    dst.set_tag(new, COMPLETE, "true")  # last: a copy without it was interrupted
    return new


def earlier_copies(dst: mlflow.MlflowClient, experiment_id: str) -> dict[str, str]:
    """Returns {old id: new id} of the complete copies already in the target experiment;
    deletes the incomplete ones (an interrupted migration), which are then made again."""
    done = {}
    for run in all_runs(dst, experiment_id):
        if FROM not in run.data.tags:
            continue
        if run.data.tags.get(COMPLETE) == "true":
            done[run.data.tags[FROM]] = run.info.run_id
        else:
            dst.delete_run(run.info.run_id)
    return done


def logged_models(client: mlflow.MlflowClient, run) -> list:
    """Returns the models the run logged (MLflow 3 keeps their files outside the run's)."""
    return list(client.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}'"))


def copy_experiments(src: mlflow.MlflowClient, dst: mlflow.MlflowClient) -> tuple[dict, int]:
    """Copies every active experiment and the runs not copied before; returns ({old run id:
    new run id} of every run, the number copied now)."""
    ids: dict[str, str] = {}
    sources, copied = [], 0
    for experiment in src.search_experiments(view_type=ViewType.ACTIVE_ONLY):
        existing = dst.get_experiment_by_name(experiment.name)
        target = existing.experiment_id if existing else dst.create_experiment(
            experiment.name, tags=experiment.tags)
        ids.update(earlier_copies(dst, target))
        for run in all_runs(src, experiment.experiment_id):
            sources.append(run)
            if run.info.run_id not in ids:
                ids[run.info.run_id] = copy_run(src, dst, run, target, ids)
                copied += 1
    relink(dst, sources, ids)
    return ids, copied


def relink(dst: mlflow.MlflowClient, sources: list, ids: dict[str, str]) -> None:
    """Points each copy's parent link and run-id tags at the copies (a tag may name a run
    copied after its own, and an interrupted migration may have stopped before this)."""
    for run in sources:
        new = ids[run.info.run_id]
        links = {k: ids[v] for k, v in run.data.tags.items() if v in ids}
        for key, value in links.items():
            dst.set_tag(new, key, value)


def copy_registry(src: mlflow.MlflowClient, dst: mlflow.MlflowClient,
                  ids: dict[str, str]) -> int:
    """Copies registered models, the versions not copied before (files in the copied run,
    run-id tags remapped) and aliases; returns the number of versions copied now."""
    copied = 0
    for model in src.search_registered_models():
        if not dst.search_registered_models(f"name = '{model.name}'"):
            dst.create_registered_model(model.name, tags=model.tags, description=model.description)
        numbers = {v.tags[VERSION_FROM]: v.version for v in
                   dst.search_model_versions(f"name = '{model.name}'") if VERSION_FROM in v.tags}
        for version in sorted(src.search_model_versions(f"name = '{model.name}'"),
                              key=lambda v: int(v.version)):
            if str(version.version) not in numbers:
                numbers[str(version.version)] = copy_version(src, dst, model.name, version, ids)
                copied += 1
        for alias, version in model.aliases.items():
            dst.set_registered_model_alias(model.name, alias, numbers[str(version)])
    return copied


def copy_version(src: mlflow.MlflowClient, dst: mlflow.MlflowClient, name: str, version,
                 ids: dict[str, str]) -> str:
    """Copies one model version's files into its run's copy (or a run of its own) and
    registers them; returns the new version number."""
    run = ids.get(version.run_id) or version_run(dst, name, version.version)
    path = f"registered/{name}/v{version.version}"
    with tempfile.TemporaryDirectory() as folder:
        files = mlflow.artifacts.download_artifacts(
            artifact_uri=src.get_model_version_download_uri(name, version.version),
            dst_path=folder)
        dst.log_artifacts(run, files, artifact_path=path)
    tags = remapped(version.tags, ids) | {VERSION_FROM: str(version.version)}
    return dst.create_model_version(name, f"{dst.get_run(run).info.artifact_uri}/{path}",
                                    run_id=run, tags=tags,
                                    description=version.description).version


def version_run(dst: mlflow.MlflowClient, name: str, version: str) -> str:
    """Returns the run that holds a version whose own run is not in the source store (made
    once: an interrupted migration's is reused)."""
    experiment = dst.get_experiment_by_name("Default").experiment_id
    run_name = f"migrated-{name}-v{version}"
    found = dst.search_runs([experiment], f"attributes.run_name = '{run_name}'", max_results=1)
    return found[0].info.run_id if found else dst.create_run(
        experiment, run_name=run_name).info.run_id


def migrate_store(source: str, target: str) -> str:
    """Copies what the store at `source` holds and `target` does not yet; returns a
    one-line summary."""
    src, dst = clients(source, target)
    ids, runs = copy_experiments(src, dst)
    versions = copy_registry(src, dst, ids)
    return (f"migrated {runs} runs and {versions} model versions from {source} to {target} "
            f"({len(ids) - runs} runs were there already; each copy tagged {FROM} = its old "
            f"id, references remapped)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, help="tracking URI to copy from")
    parser.add_argument("--target", required=True, help="tracking URI to copy into")
    args = parser.parse_args(argv)
    print(migrate_store(args.source, args.target))
    return 0


if __name__ == "__main__":
    sys.exit(main())
