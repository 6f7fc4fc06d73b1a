"""A compact live status line for the search, in place of Tune's result tables."""
from __future__ import annotations

import sys
import time

from ray import tune


class StatusLine(tune.Callback):
    """Prints `fold 2/5 | trials 7/12 done, 2 running | best val AUC 0.981 | 3m10s, ETA 14m`.

    A line at most every `every` seconds and on every finished trial. The ETA assumes the
    later folds cost what this fold costs.
    """

    def __init__(self, fold: int, n_folds: int, trials: int, every: float = 15.0):
        # Plain state only: Tune pickles callbacks with the tuner (for Tuner.restore).
        self.fold, self.n_folds, self.trials, self.every = fold, n_folds, trials, every
        self.setup()

    def setup(self, **info) -> None:
        """Called by Tune when the fold's experiment (re)starts."""
        self.started, self.last = time.monotonic(), 0.0
        self.best, self.finished = float("nan"), 0

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        auc = result.get("val_auc")
        if auc is not None and not auc <= self.best:  # also replaces the initial NaN
            self.best = auc
        if time.monotonic() - self.last >= self.every:
            self.show(trials)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.finished += 1
        self.show(trials, ending=trial)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.finished += 1
        self.show(trials, ending=trial)

    def show(self, trials, ending=None) -> None:
        self.last = time.monotonic()
        # Tune reports a trial complete before changing its status.
        running = sum(t.status == "RUNNING" and t is not ending for t in trials)
        elapsed = time.monotonic() - self.started
        share = self.finished / self.trials  # of this fold
        later_folds = self.n_folds - self.fold - 1
        eta = elapsed / share * (1 - share + later_folds) if share else float("nan")
        print(f"fold {self.fold + 1}/{self.n_folds} | trials {self.finished}/{self.trials} done, "
              f"{running} running | best val AUC {self.best:.3f} | fold {clock(elapsed)}, "
              f"search ETA {clock(eta)}", file=sys.stdout, flush=True)


def clock(seconds: float) -> str:
    """Returns `3m05s` for 185 seconds, `?` for NaN (nothing to estimate from yet)."""
    if seconds != seconds:  # NaN: nothing finished yet
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"
