import signal
import time
import traceback
from pathlib import Path

import keras
import mlflow
import numpy as np
import pytest
import yaml
from sqlalchemy import event
from sqlalchemy.engine import Engine

from mammo_core.config import load_experiment
from mammo_core.tracking import (STORE_MODULES, EpochLogger, Terminated, ensure_experiment,
                                 log_data_input, log_experiment_config, log_keras_model,
                                 runtime_requirements, tracked_run, tracking_uri)

ROOT = Path(__file__).resolve().parents[1]


def status_of(run_id: str) -> str:
    return mlflow.get_run(run_id).info.status


def test_uri_defaults_to_project_db_with_absolute_path(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert tracking_uri(tmp_path) == f"sqlite:///{tmp_path}/mlflow.db"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///rel.db")
    assert tracking_uri(Path("/elsewhere")) == f"sqlite:///{tmp_path.resolve()}/rel.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri(tmp_path) == "http://127.0.0.1:5000"


def test_run_statuses(tracking_store):
    with tracked_run("exp", "ok") as run:
        mlflow.log_metric("x", 1.0)
    assert status_of(run.info.run_id) == "FINISHED"
    for error, expected in ((ValueError("boom"), "FAILED"), (KeyboardInterrupt(), "KILLED"),
                            (Terminated("sigterm"), "KILLED")):
        with pytest.raises(type(error)):
            with tracked_run("exp", "bad") as run:
                mlflow.log_metric("x", 1.0)
                raise error
        assert status_of(run.info.run_id) == expected
        assert mlflow.get_run(run.info.run_id).data.metrics["x"] == 1.0  # nothing lost


def test_signal_inside_a_c_extension_still_counts_as_killed(tracking_store):
    with pytest.raises(SystemError):
        with tracked_run("exp", "c-ext") as run:
            try:
                raise Terminated("sigterm")
            except Terminated as cause:
                raise SystemError("returned a result with an exception set") from cause
    assert status_of(run.info.run_id) == "KILLED"


@pytest.mark.parametrize("signum, error", [(signal.SIGTERM, Terminated),
                                            (signal.SIGINT, KeyboardInterrupt)])
def test_a_signal_inside_a_store_call_lands_after_it(tracking_store, signum, error):
    # The signal arrives while SQLAlchemy runs the store's statement: raised there, it left
    # the SQLite file locked and the run RUNNING (tests/test_search.py's SIGTERM test).
    sent = []

    def send_once(*args):
        if not sent:
            sent.append(signum)
            signal.raise_signal(signum)

    with pytest.raises(error) as caught:
        with tracked_run("exp", "signalled") as run:
            event.listen(Engine, "before_cursor_execute", send_once)
            try:
                mlflow.log_metric("x", 1.0)
                time.sleep(5)  # the signal comes back while the run waits here
            finally:
                event.remove(Engine, "before_cursor_execute", send_once)
    assert sent == [signum]
    modules = [frame.f_globals["__name__"] for frame, _ in
               traceback.walk_tb(caught.value.__traceback__)]
    assert not any(name.startswith(STORE_MODULES) for name in modules), modules
    assert status_of(run.info.run_id) == "KILLED"
    assert mlflow.get_run(run.info.run_id).data.metrics["x"] == 1.0  # the call completed
    with tracked_run("exp", "after") as later:  # the store is not locked
        mlflow.log_metric("y", 2.0)
    assert status_of(later.info.run_id) == "FINISHED"


def test_a_dataset_another_run_inserts_first_is_linked_not_fatal(tracking_store):
    # Two runs logging a new dataset at once both insert it (measured on a team server:
    # PostgreSQL's dataset_pk). Here the other run's row goes in on the same statement's
    # cursor just before ours, and the store refuses ours for the unique key.
    raced = []

    def insert_first(conn, cursor, statement, parameters, context, executemany):
        if not raced and statement.lstrip().startswith("INSERT INTO datasets"):
            raced.append(statement)
            cursor.execute(statement, ("0" * 32, *parameters[1:]))

    images, labels = np.zeros((4, 6, 6), np.float32), np.array([0, 1, 0, 1])
    with tracked_run("exp", "racing") as run:
        event.listen(Engine, "before_cursor_execute", insert_first)
        try:
            log_data_input(images, labels, str(ROOT), "patches", "f" * 16, "train")
        finally:
            event.remove(Engine, "before_cursor_execute", insert_first)
    assert raced  # the race happened, and the call survived it
    inputs = mlflow.get_run(run.info.run_id).inputs.dataset_inputs
    assert [(i.dataset.name, i.dataset.digest) for i in inputs] == [("patches", "f" * 16)]


def test_existing_run_is_reopened(tracking_store):
    run = mlflow.MlflowClient().create_run(ensure_experiment("exp"))
    with tracked_run("exp", "ignored", run_id=run.info.run_id) as active:
        assert active.info.run_id == run.info.run_id
    assert status_of(run.info.run_id) == "FINISHED"


def test_child_runs_end_before_their_parent(tracking_store):
    with tracked_run("exp", "parent") as parent:
        with pytest.raises(KeyboardInterrupt):
            with tracked_run("exp", "child", parent_run_id=parent.info.run_id) as child:
                raise KeyboardInterrupt
        assert mlflow.active_run().info.run_id == parent.info.run_id
    assert mlflow.get_run(child.info.run_id).data.tags["mlflow.parentRunId"] == parent.info.run_id
    assert status_of(child.info.run_id) == "KILLED"
    assert status_of(parent.info.run_id) == "FINISHED"


def test_artifacts_live_beside_the_sqlite_file(tracking_store, tmp_path):
    experiment = mlflow.get_experiment(ensure_experiment("beside"))
    assert experiment.artifact_location == (tmp_path / "mlartifacts").as_uri()


def test_config_logged_as_params_yaml_and_tags(tracking_store):
    experiment = load_experiment(ROOT / "experiments" / "microcal_quick.yaml")
    with tracked_run("exp", "cfg") as run:
        log_experiment_config(experiment, "experiments/microcal_quick.yaml")
    data = mlflow.get_run(run.info.run_id).data
    assert data.params["preprocessing.wavelet.family"] == "sym3"
    assert data.tags["mammo.config_hash"] == experiment.fingerprint()
    text = mlflow.artifacts.load_text(f"runs:/{run.info.run_id}/config/experiment.yaml")
    assert yaml.safe_load(text) == experiment.to_dict()


def test_epoch_logger_and_keras_model(tracking_store):
    model = keras.Sequential([keras.Input((4, 4, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile("adam", "binary_crossentropy")
    x = np.random.default_rng(0).random((8, 4, 4, 1), dtype=np.float32)
    with tracked_run("exp", "keras") as run:
        model.fit(x, np.arange(8) % 2, epochs=3, verbose=0, callbacks=[EpochLogger()])
        uri = log_keras_model(model, x[:2])
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "epoch_loss")
    assert [m.step for m in history] == [1, 2, 3]
    loaded = mlflow.pyfunc.load_model(uri)
    assert loaded.metadata.signature.inputs.to_dict()[0]["tensor-spec"]["shape"] == (-1, 4, 4, 1)
    np.testing.assert_allclose(np.asarray(loaded.predict(x)).ravel(),
                               model.predict(x, verbose=0).ravel(), atol=1e-6)


def test_runtime_requirements_are_pinned():
    pins = runtime_requirements()
    assert any(p.startswith("keras==") for p in pins)
    assert any(p.startswith("tensorflow") for p in pins)


def test_registry_reference_parses_version_uris_and_ignores_others():
    from mammo_core.tracking import registry_reference

    assert registry_reference("models:/mammo-microcal/3") == {
        "name": "mammo-microcal", "version": "3", "alias": ""}
    assert registry_reference("runs:/abc/ensemble") == {"name": "", "version": "", "alias": ""}
