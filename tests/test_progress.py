import io
import pickle
from contextlib import redirect_stdout
from types import SimpleNamespace

from tune.progress import StatusLine
from tune.trial_runs import TrialRuns


def trials(*statuses):
    return [SimpleNamespace(status=s, trial_id=f"t{i}") for i, s in enumerate(statuses)]


class Clock:
    """A clock the test moves by hand."""

    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_status_line_shows_fold_trials_best_and_eta():
    line = StatusLine(fold=1, n_folds=5, trials=4, every=0)
    out = io.StringIO()
    with redirect_stdout(out):
        line.on_trial_result(0, trials("RUNNING", "RUNNING"), None, {"val_auc": 0.7})
        line.on_trial_result(0, trials("RUNNING", "RUNNING"), None, {"val_auc": 0.9})
        line.on_trial_result(0, trials("RUNNING", "RUNNING"), None, {"val_auc": 0.8})
        both = trials("RUNNING", "RUNNING")
        line.on_trial_complete(0, both, both[0])
    lines = out.getvalue().strip().splitlines()
    assert lines[0].startswith("fold 2/5 | trials 0/4 done, 2 running | best val AUC 0.700")
    assert "ETA ?" in lines[0]
    assert "best val AUC 0.900" in lines[2]
    assert "trials 1/4 done, 1 running" in lines[3] and "ETA ?" not in lines[3]


def eta_minutes(line: str) -> float:
    minutes, seconds = line.rsplit("ETA ", 1)[1].rstrip("s").split("m")
    return int(minutes) + int(seconds) / 60


def test_the_eta_follows_the_work_left_instead_of_jumping_with_the_folds_share():
    """Two folds of 4 trials, 2 at a time, every trial 60 s: the ETA falls by about a
    minute per minute, whichever trial just finished (the old share-of-fold estimate
    read 6, 14 and then 6 minutes again within one fold)."""
    clock, durations = Clock(), []
    out = io.StringIO()
    with redirect_stdout(out):
        for fold in range(2):
            line = StatusLine(fold, 2, trials=4, concurrency=2, every=1e9,
                              durations=durations, now=clock)
            pool = trials("RUNNING", "RUNNING", "RUNNING", "RUNNING")
            for pair in (pool[:2], pool[2:]):
                for trial in pair:
                    line.on_trial_start(0, pool, trial)
                clock.t += 60
                for trial in pair:
                    line.on_trial_complete(0, pair, trial)
    etas = [eta_minutes(x) for x in out.getvalue().splitlines() if "ETA ?" not in x]
    assert len(etas) == 8 and etas[-1] == 0  # a line per finished trial, each with an ETA
    assert all(later <= earlier for earlier, later in zip(etas, etas[1:]))
    assert etas[0] == 3.0  # after the first trial: 7 trials left of 60 s, 2 workers (-1 running)
    assert len(durations) == 8  # the second fold's line kept the first fold's durations


def test_callbacks_pickle_without_clients_or_streams(tmp_path):
    # Tune pickles callbacks with the tuner so that Tuner.restore can rebuild them.
    runs = TrialRuns(f"sqlite:///{tmp_path / 'x.db'}", "1", "fold-run", 0, 40)
    assert runs.client is not None  # made lazily...
    restored = pickle.loads(pickle.dumps(runs))  # ...and left out of the pickle
    assert restored.fold_run_id == "fold-run" and "_client" not in restored.__dict__
    with runs.writing():  # the time spent writing is plain state: it survives a restore
        pass
    assert pickle.loads(pickle.dumps(runs)).seconds == runs.seconds > 0
    status = pickle.loads(pickle.dumps(StatusLine(0, 5, 12)))
    assert status.trials == 12
