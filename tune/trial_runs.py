"""Mirrors Ray Tune trials into MLflow runs nested under their fold run (driver side).

Why not MLflowLoggerCallback or setup_mlflow: the first gives no nesting, the second
leaves runs RUNNING when ASHA stops a trial, and neither finds its runs again after
Tuner.restore. Here every write happens on the driver, so trials on any node reach the
store, and every run ends FINISHED, FAILED or KILLED. The seconds the mirror spends
writing are logged on the fold run (`trial_mirror_seconds`): the tracking store's cost to
the search, since Tune waits for its callbacks before it hands a trial its next epoch.
"""
from __future__ import annotations

import time
from contextlib import contextmanager

from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunStatus, RunTag
from mlflow.utils.time import get_current_time_millis
from ray import tune

EPOCH_METRICS = ("loss", "auc", "val_loss", "val_auc", "accuracy", "val_accuracy", "seconds")


class MlflowCallback(tune.Callback):
    """A Tune callback that writes to MLflow from the driver.

    Tune pickles callbacks with the tuner (for Tuner.restore), so only plain state is kept:
    the client is made on first use and attributes starting with `_` are not pickled.
    `seconds` adds up the time spent in `writing()` blocks.
    """

    def __init__(self, tracking_uri: str):
        self.tracking_uri, self.seconds = tracking_uri, 0.0

    @property
    def client(self) -> MlflowClient:
        if getattr(self, "_client", None) is None:
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if not k.startswith("_")}

    @contextmanager
    def writing(self):
        started = time.perf_counter()
        try:
            yield self.client
        finally:
            self.seconds += time.perf_counter() - started


class TrialRuns(MlflowCallback):
    """One MLflow run per trial: params `hyperparameters.*`, `epoch_*` curves, best `val_auc`;
    on the fold run, `trial_mirror_seconds` when the fold's search ends."""

    def __init__(self, tracking_uri: str, experiment_id: str, fold_run_id: str, fold: int,
                 max_epochs: int):
        super().__init__(tracking_uri)
        self.experiment_id = experiment_id
        self.fold_run_id, self.fold, self.max_epochs = fold_run_id, fold, max_epochs
        self.runs: dict[str, str] = {}  # trial id -> MLflow run id
        self.best: dict[str, float] = {}

    def on_trial_start(self, iteration: int, trials: list, trial, **info) -> None:
        with self.writing():
            self._start(trial)

    def _start(self, trial) -> None:
        run_id = self.runs.get(trial.trial_id) or find_trial_run(
            self.client, self.experiment_id, self.fold_run_id, trial.trial_id)
        if run_id is None:
            run_id = self._create(trial)
        else:  # restored after a driver restart, or retried after a worker died
            self.client.update_run(run_id, status="RUNNING")
        self.runs[trial.trial_id] = run_id

    def on_trial_result(self, iteration: int, trials: list, trial, result: dict, **info) -> None:
        """One call per epoch: the epoch's curves, and the best so far when it improves."""
        step, now = int(result["epoch"]), get_current_time_millis()
        metrics = [Metric(f"epoch_{k}", float(result[k]), now, step)
                   for k in EPOCH_METRICS if k in result]
        tags = []
        if step == 1 or trial.trial_id not in self.best:  # where it ran: one tag per trial
            tags.append(RunTag("mammo.node_ip", str(result.get("node_ip", ""))))
            if "n_weights" in result:  # ("params" is Tune's own: the trial config)
                metrics.append(Metric("n_weights", float(result["n_weights"]), now, 0))
        if result.get("val_auc", -1) > self.best.get(trial.trial_id, -1):
            self.best[trial.trial_id] = result["val_auc"]
            metrics += [Metric("val_auc", result["val_auc"], now, 0),
                        Metric("best_epoch", step, now, 0)]
        with self.writing() as client:
            client.log_batch(self.runs[trial.trial_id], metrics=metrics, tags=tags)

    def on_trial_recover(self, iteration: int, trials: list, trial, **info) -> None:
        """A trial's worker died and Tune retries it: the same run continues, tagged."""
        run_id = self.runs.get(trial.trial_id)
        if run_id:
            retries = int(self.client.get_run(run_id).data.tags.get("mammo.retries", "0")) + 1
            self.client.set_tag(run_id, "mammo.retries", str(retries))

    def on_trial_complete(self, iteration: int, trials: list, trial, **info) -> None:
        with self.writing():
            self._end(trial, "FINISHED")

    def on_trial_error(self, iteration: int, trials: list, trial, **info) -> None:
        with self.writing():
            self._end(trial, "FAILED")

    def on_experiment_end(self, trials: list, **info) -> None:
        """Logs `trial_mirror_seconds` on the fold run (the total over restarts)."""
        self.client.log_metric(self.fold_run_id, "trial_mirror_seconds", self.seconds)

    def _create(self, trial) -> str:
        number = len(self.runs) + 1
        run = self.client.create_run(self.experiment_id, run_name=f"fold{self.fold}-trial{number}",
                                     tags={"mlflow.parentRunId": self.fold_run_id,
                                           "mammo.kind": "trial", "mammo.fold": str(self.fold),
                                           "mammo.trial_id": trial.trial_id})
        params = [Param(_param_name(k), str(v)) for k, v in trial.config.items()]
        if "family" in trial.config:  # the same key on trial, fold and register runs
            params.append(Param("family", str(trial.config["family"])))
        self.client.log_batch(run.info.run_id, params=params)
        return run.info.run_id

    def _end(self, trial, status: str) -> None:
        run_id = self.runs.get(trial.trial_id)
        if run_id is None:
            return
        stopped = trial.last_result.get("epoch", 0) < self.max_epochs  # ASHA stopped it
        self.client.set_tag(run_id, "mammo.stopped_early", str(stopped).lower())
        self.client.set_terminated(run_id, RunStatus.to_string(getattr(RunStatus, status)))


def find_trial_run(client: MlflowClient, experiment_id: str, fold_run_id: str,
                   trial_id: str) -> str | None:
    """Returns the MLflow run of Tune trial `trial_id` under the fold run, or None."""
    found = client.search_runs([experiment_id], f"tags.mammo.trial_id = '{trial_id}' and "
                                                f"tags.mlflow.parentRunId = '{fold_run_id}'")
    return found[0].info.run_id if found else None


def close_open_trials(tracking_uri: str, fold_run_id: str, status: str = "KILLED") -> None:
    """Ends every trial run of the fold still RUNNING (driver interrupted or crashed)."""
    client = MlflowClient(tracking_uri)
    experiment_id = client.get_run(fold_run_id).info.experiment_id
    for run in client.search_runs([experiment_id], f"tags.mlflow.parentRunId = '{fold_run_id}' "
                                                   "and attributes.status = 'RUNNING'"):
        client.set_terminated(run.info.run_id, status)


def _param_name(key: str) -> str:
    # The same names as the `train` entry point's params, so the compare view lines up.
    return key if key == "seed" else f"hyperparameters.{key}"
