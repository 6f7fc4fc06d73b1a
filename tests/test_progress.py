import io
import pickle
from contextlib import redirect_stdout
from types import SimpleNamespace

from tune.progress import StatusLine
from tune.trial_runs import TrialRuns


def trials(*statuses):
    return [SimpleNamespace(status=s) for s in statuses]


def test_status_line_shows_fold_trials_best_and_eta():
    line = StatusLine(fold=1, n_folds=5, trials=4, every=0)
    out = io.StringIO()
    with redirect_stdout(out):
        line.on_trial_result(0, trials("RUNNING", "RUNNING"), None, {"val_auc": 0.7})
        line.on_trial_result(0, trials("RUNNING", "RUNNING"), None, {"val_auc": 0.9})
        line.on_trial_result(0, trials("RUNNING", "RUNNING"), None, {"val_auc": 0.8})
        ending = SimpleNamespace(status="RUNNING")
        line.on_trial_complete(0, [ending, SimpleNamespace(status="RUNNING")], ending)
    lines = out.getvalue().strip().splitlines()
    assert lines[0].startswith("fold 2/5 | trials 0/4 done, 2 running | best val AUC 0.700")
    assert "ETA ?" in lines[0]
    assert "best val AUC 0.900" in lines[2]
    assert "trials 1/4 done, 1 running" in lines[3] and "ETA ?" not in lines[3]


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
