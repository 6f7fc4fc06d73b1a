"""Time to quality: the search run's best-so-far validation AUC against wall time.

Each fold's curve is a metric of the search run, `best_val_auc_so_far.fold<k>`, whose
`step` is the whole seconds since the search run started (so a resumed search goes on
where it stopped, its pause included). The figure is drawn from those metrics at the end.
"""
from __future__ import annotations

import time

from mlflow import MlflowClient
from mlflow.entities import Metric

from mammo_core.metrics import time_to_quality_figure
from mammo_core.tracking import log_figure
from tune.trial_runs import MlflowCallback

METRIC_PREFIX = "best_val_auc_so_far.fold"
FIGURE = "figures/time_to_quality.png"


class TimeToQuality(MlflowCallback):
    """Logs a point of `best_val_auc_so_far.fold<k>` on the search run whenever a trial of
    fold k beats the fold's best validation AUC, and one when the fold's search ends
    (driver side)."""

    def __init__(self, tracking_uri: str, search_run_id: str, fold: int):
        super().__init__(tracking_uri)
        self.search_run_id, self.fold = search_run_id, fold
        self.best = float("-inf")

    @property
    def started(self) -> float:
        """The search run's start (epoch seconds), read once per process."""
        if getattr(self, "_started", None) is None:
            self._started = self.client.get_run(self.search_run_id).info.start_time / 1000
        return self._started

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        auc = result.get("val_auc")
        if auc is not None and auc > self.best:  # NaN never improves
            self.best = float(auc)
            self.log()

    def on_experiment_end(self, trials, **info) -> None:
        """The fold's last point: its best, when the fold's search ended (a flat line
        after the last gain is budget spent without improvement)."""
        if self.best > float("-inf"):
            self.log()

    def log(self) -> None:
        started, now = self.started, time.time()
        self.client.log_batch(self.search_run_id, metrics=[Metric(
            f"{METRIC_PREFIX}{self.fold}", self.best, int(now * 1000), int(now - started))])


def log_time_to_quality(search_run_id: str, n_folds: int) -> None:
    """Logs figures/time_to_quality.png (every fold's curve) in the active run, from the
    search run's `best_val_auc_so_far.fold<k>` metrics."""
    client = MlflowClient()
    curves = {}
    for fold in range(n_folds):
        history = client.get_metric_history(search_run_id, f"{METRIC_PREFIX}{fold}")
        points = sorted((m.step, m.value) for m in history)
        curves[f"fold {fold}"] = ([s for s, _ in points], [v for _, v in points])
    log_figure(time_to_quality_figure(curves), FIGURE)
