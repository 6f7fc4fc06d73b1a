"""`main` entry point: tune -> register -> evaluate on the ensemble hold-out.

    mlflow run . --env-manager local -P config=experiments/microcal_quick.yaml
    python -m tune.pipeline --config experiments/microcal_quick.yaml

One run tree in the MLflow UI: the pipeline run (the project's run under `mlflow run`)
holds the search (-> folds -> trials), the register run and the evaluate run. Each stage
ends FINISHED on its own, so a failure in a later stage never marks the search failed.
"""
from __future__ import annotations

import os
import sys

import mlflow

from mammo_core.tracking import tracked_run, use_tracking_store
from tune.evaluate import evaluate_model
from tune.project import PROJECT_ROOT, load_config, run_entry
from tune.register import register_search, summary_line
from tune.search import RESUME_HINT, parse_args, run_search


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def body() -> None:
        experiment, _ = load_config(args.config)
        use_tracking_store(PROJECT_ROOT)
        with tracked_run(experiment.tracking.experiment_name, f"main-{experiment.name}",
                         tags={"mammo.entry_point": "main", "mammo.kind": "pipeline"},
                         run_id=os.environ.get("MLFLOW_RUN_ID")) as run:
            pipeline(args, run.info.run_id)

    return run_entry(body, RESUME_HINT)


def pipeline(args, run_id: str) -> None:
    """Runs the three stages as children of `run_id`; tags it with what they produced."""
    experiment, search_run, search_summary = run_search(args, child_of=run_id)
    print(f"search {search_run} FINISHED: {search_summary}", flush=True)
    registration = register_search(experiment, search_run, args.data_dir, parent_run_id=run_id)
    print(summary_line(registration), flush=True)
    model_uri = f"models:/{registration.model_name}/{registration.version}"
    scores = evaluate_model(experiment, model_uri, args.data_dir, holdout_of=search_run,
                            parent_run_id=run_id)
    mlflow.set_tags({"mammo.search_run": search_run, "mammo.model_version": registration.version,
                     "mammo.model_alias": registration.alias})
    shown = ", ".join(f"{name} {scores[name]:.3f}" for name in (
        "auc", "sensitivity", "specificity", "balanced_accuracy") if name in scores)
    mlflow.set_tag("mlflow.note.content", (
        f"**Pipeline** of `{experiment.name}`: search → register → evaluate (child runs).\n\n"
        f"- search `{search_run}`: {search_summary}\n"
        f"- registered `{registration.model_name}` v{registration.version} "
        f"@{registration.alias}: {registration.reason}\n"
        f"- hold-out evaluation, in-sample (the ensemble was fitted on it; the register run "
        f"has the cross-fitted figures): {shown}"))
    print(f"in-sample hold-out evaluation of {model_uri}: {shown} (the ensemble was fitted on "
          "these images: the register run has the cross-fitted figures)")
    print(f"\npipeline run: {run_id}\nsearch run:   {search_run}\nmodel:        "
          f"{registration.model_name} v{registration.version} @{registration.alias}\n"
          f"MLflow UI:    mlflow ui --backend-store-uri {mlflow.get_tracking_uri()}  "
          f"(or ./dev.sh ui)")


if __name__ == "__main__":
    sys.exit(main())
