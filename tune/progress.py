"""A compact live status line for the search, in place of Tune's result tables."""
from __future__ import annotations

import sys
import time

from ray import tune


class StatusLine(tune.Callback):
    """Prints `fold 2/5 | trials 7/12 done, 2 running | best val AUC 0.981 | fold 3m10s,
    search ETA 14m05s`.

    A line at most every `every` seconds and on every finished trial. The ETA is the work
    left (trials not finished in this fold and the later folds) times the mean duration of
    the trials finished so far in this search (`durations`, shared across its folds), less
    what the running trials have done, spread over `concurrency` workers: it moves smoothly
    instead of jumping with each finished trial's share of the fold.
    """

    def __init__(self, fold: int, n_folds: int, trials: int, concurrency: int = 1,
                 every: float = 15.0, durations: list[float] | None = None,
                 now=time.monotonic):
        # Plain state only: Tune pickles callbacks with the tuner (for Tuner.restore).
        self.fold, self.n_folds, self.trials, self.every = fold, n_folds, trials, every
        self.concurrency, self.now = max(1, concurrency), now
        self.durations = durations if durations is not None else []  # seconds per trial
        self.setup()

    def setup(self, **info) -> None:
        """Called by Tune when the fold's experiment (re)starts."""
        self.started, self.last = self.now(), 0.0
        self.best, self.finished = float("nan"), 0
        self.begun: dict[str, float] = {}  # trial id -> when it started

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.begun[trial.trial_id] = self.now()

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        auc = result.get("val_auc")
        if auc is not None and not auc <= self.best:  # also replaces the initial NaN
            self.best = auc
        if self.now() - self.last >= self.every:
            self.show(trials)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self.end(trials, trial)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self.end(trials, trial)

    def end(self, trials, trial) -> None:
        self.finished += 1
        self.durations.append(self.now() - self.begun.pop(trial.trial_id, self.started))
        self.show(trials, ending=trial)

    def eta(self, running: list) -> float:
        """Returns the seconds the search still needs (NaN before any trial finished)."""
        if not self.durations:
            return float("nan")
        mean = sum(self.durations) / len(self.durations)
        left = self.trials - self.finished + self.trials * (self.n_folds - self.fold - 1)
        done = sum(min(self.now() - self.begun.get(t.trial_id, self.started), mean)
                   for t in running)
        return max(mean * left - done, 0.0) / max(1, min(self.concurrency, left))

    def show(self, trials, ending=None) -> None:
        self.last = self.now()
        # Tune reports a trial complete before changing its status.
        running = [t for t in trials if t.status == "RUNNING" and t is not ending]
        print(f"fold {self.fold + 1}/{self.n_folds} | trials {self.finished}/{self.trials} done, "
              f"{len(running)} running | best val AUC {self.best:.3f} | fold "
              f"{clock(self.now() - self.started)}, search ETA {clock(self.eta(running))}",
              file=sys.stdout, flush=True)


def clock(seconds: float) -> str:
    """Returns `3m05s` for 185 seconds, `?` for NaN (nothing to estimate from yet)."""
    if seconds != seconds:  # NaN: nothing finished yet
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}m{secs:02d}s"
