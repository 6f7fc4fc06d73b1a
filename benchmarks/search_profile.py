"""Where a search's time goes: one outer fold of the real search, profiled phase by phase.

    python benchmarks/search_profile.py --config experiments/microcal.yaml --fold 0
    python benchmarks/search_profile.py --config experiments/microcal.yaml --reuse-actors true

Runs fold `--fold` of the search exactly as `tune.search` does (tune.fold.fit_fold: the same
trainable, searcher, ASHA, checkpoints and MLflow mirroring, into its own SQLite store),
then prints a markdown table of core-seconds: trial start-up (worker start, imports, data
fetch), model build + compile, the rest of a trial's setup, training epochs, validation,
checkpoint + report, what else a trial's worker spent (teardown, Tune between reports),
and idle cores (cores x wall time - the trials' busy time). The driver's MLflow mirroring
is timed separately (it runs on the driver, not a trial core). Then the epochs trained
and how many trials ASHA stopped early.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import tune as _project  # noqa: E402,F401  (decides Ray's loopback binding before import)
import mlflow  # noqa: E402
import ray  # noqa: E402
from ray import tune  # noqa: E402

from mammo_core.folds import make_fold_plan  # noqa: E402
from mammo_core.preprocessing import preprocess  # noqa: E402
from tune.cluster import start_ray  # noqa: E402
from tune.fold import fit_fold  # noqa: E402
from tune.project import load_config, load_data  # noqa: E402
from tune.trial_runs import TrialRuns  # noqa: E402

STORE = ROOT / "benchmarks" / "results" / "profile.db"
HOOKS = ("on_trial_start", "on_trial_result", "on_trial_complete", "on_trial_error")


class Timed(tune.Callback):
    """Forwards the trial hooks to `inner` and adds up the seconds they take."""

    def __init__(self, inner: tune.Callback):
        self.inner, self.seconds = inner, 0.0
        for name in HOOKS:
            setattr(self, name, self._timed(getattr(inner, name)))

    def _timed(self, hook):
        def call(*args, **kwargs):
            start = time.perf_counter()
            hook(*args, **kwargs)
            self.seconds += time.perf_counter() - start
        return call


class Timeline(tune.Callback):
    """Records when each trial started and ended (driver clock) and all its results."""

    def __init__(self):
        self.started, self.ended = {}, {}
        self.results: dict[str, list[dict]] = defaultdict(list)

    def on_step_end(self, iteration, trials, **info) -> None:
        # A trial counts from when Tune first lists it: the searcher is held to
        # max_concurrent_trials, so that is when a core frees up. (Tune's on_trial_start
        # comes only once the trial's worker is running.)
        now = time.time()
        for trial in trials:
            self.started.setdefault(trial.trial_id, now)

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self.results[trial.trial_id].append(dict(result))

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.ended[trial.trial_id] = time.time()

    on_trial_error = on_trial_complete


def profile(timeline: Timeline, began: float, ended: float, cores: int,
            max_epochs: int) -> dict[str, float]:
    """Returns core-seconds per phase summed over trials, idle core-seconds (before the
    first trial, between trials, after the last) and the counts."""
    phases = defaultdict(float)
    for trial, results in timeline.results.items():
        first = results[0]
        busy = timeline.ended.get(trial, time.time()) - timeline.started[trial]
        parts = {"trial start-up (worker, imports, data)":
                     first["entered_at"] - timeline.started[trial],
                 "model build + compile": first["build_seconds"],
                 "other setup (seeds, balancing, restore)":
                     first["setup_seconds"] - first["build_seconds"],
                 "training epochs": sum(r["train_seconds"] for r in results),
                 "validation": sum(r["val_seconds"] for r in results),
                 "checkpoint + report": sum(r["report_seconds"] for r in results)}
        parts["rest of the trial (teardown, Tune between reports)"] = busy - sum(parts.values())
        for name, seconds in parts.items():
            phases[name] += seconds
        phases["busy"] += busy
        phases["trials"] += 1
        phases["epochs"] += len(results)
        phases["stopped early"] += results[-1]["epoch"] < max_epochs
    first, last = min(timeline.started.values()), max(timeline.ended.values())
    phases["idle: Tuner start-up before the first trial"] = cores * (first - began)
    phases["idle: after the last trial (other core waits, Tuner end)"] = cores * (ended - last)
    phases["idle: cores between trials"] = (cores * (last - first) - phases["busy"])
    return phases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/microcal.yaml")
    parser.add_argument("--fold", type=int, default=0)
    parser.add_argument("--reuse-actors", default="", choices=["", "true", "false"],
                        help="override search.reuse_actors")
    args = parser.parse_args()
    experiment, _ = load_config(args.config)
    if args.reuse_actors:
        experiment = experiment.replace(search=experiment.search.replace(
            reuse_actors=args.reuse_actors == "true"))
    dataset, _ = load_data(experiment, "")
    fold = make_fold_plan(dataset, experiment.split, experiment.cross_validation).folds[args.fold]
    images = preprocess(dataset.images, experiment.preprocessing)
    data = {"x_train": images[fold.train], "y_train": dataset.labels[fold.train],
            "x_val": images[fold.val], "y_val": dataset.labels[fold.val]}
    STORE.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(f"sqlite:///{STORE}")
    mlflow.set_experiment("search-profile")
    start_ray()
    cores = experiment.search.max_concurrent_trials
    with mlflow.start_run(run_name=f"profile-fold{args.fold}") as run, \
            tempfile.TemporaryDirectory() as storage:
        mirror = Timed(TrialRuns(mlflow.get_tracking_uri(), run.info.experiment_id,
                                 run.info.run_id, args.fold, experiment.search.max_epochs))
        timeline = Timeline()
        began = time.time()
        fit_fold(experiment, args.fold, data, Path(storage), [mirror, timeline], None, False)
        ended = time.time()
    ray.shutdown()
    report(profile(timeline, began, ended, cores, experiment.search.max_epochs),
           ended - began, cores, mirror.seconds, experiment.search.reuse_actors)


def report(phases: dict[str, float], wall: float, cores: int, mirror: float,
           reuse: bool) -> None:
    counts = {k: phases.pop(k) for k in ("trials", "busy", "epochs", "stopped early")}
    total = cores * wall
    print(f"\nfold wall time {wall:.1f} s on {cores} cores = {total:.0f} core-seconds "
          f"(reuse_actors {str(reuse).lower()})\n")
    print("| phase | core-seconds | share |\n|---|---|---|")
    for name, seconds in phases.items():
        print(f"| {name} | {seconds:.1f} | {seconds / total:.1%} |")
    print(f"\ntrials {int(counts['trials'])}, {int(counts['stopped early'])} stopped early by ASHA; "
          f"epochs trained {int(counts['epochs'])}; driver MLflow mirroring {mirror:.1f} s "
          f"({mirror / wall:.1%} of wall time, on the driver)")


if __name__ == "__main__":
    main()
