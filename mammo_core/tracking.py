"""MLflow helpers: tracking URI, runs that always end, config, figures and Keras models.

This is the one library module that calls MLflow; everything else returns plain values.
"""
from __future__ import annotations

import hashlib
import os
import signal
import threading
import warnings
from importlib import metadata
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Mapping

import keras
import matplotlib.pyplot as plt
import mlflow
import mlflow.data
import numpy as np
from matplotlib.figure import Figure
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.dataset_source_registry import resolve_dataset_source
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature

from mammo_core.config import Experiment, flat_params, plain
from mammo_core.recipe import resolve

DB_NAME = "mlflow.db"


def tracking_uri(project_root: Path) -> str:
    """Returns MLFLOW_TRACKING_URI, or the project's SQLite file, always with an absolute path.

    A relative `sqlite:///x.db` is resolved against the current folder now, because Ray
    Tune later changes each trial's folder and would otherwise create new databases.
    """
    uri = os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root / DB_NAME}"
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        uri = prefix + str(Path(uri[len(prefix):]).resolve())
    return uri


def use_tracking_store(project_root: Path) -> str:
    """Points MLflow (tracking and registry) at `tracking_uri(project_root)`; returns it."""
    uri = tracking_uri(project_root)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def ensure_experiment(name: str) -> str:
    """Returns the id of experiment `name`, creating it if needed.

    With a SQLite store, artifacts go to `mlartifacts/` beside the database file, so a
    store and its artifacts stay together whatever folder a process runs in.
    """
    existing = mlflow.get_experiment_by_name(name)
    if existing is not None:
        return existing.experiment_id
    uri = mlflow.get_tracking_uri()
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").as_uri()
    try:
        return mlflow.create_experiment(name, artifact_location=location)
    except MlflowException:
        # another process (a second user's search on a shared server) created it meanwhile
        existing = mlflow.get_experiment_by_name(name)
        if existing is None:
            raise
        return existing.experiment_id


class Terminated(BaseException):
    """Raised on SIGTERM so that a killed entry point still closes its run (KILLED)."""


@contextmanager
def tracked_run(experiment_name: str, run_name: str, tags: Mapping[str, str] | None = None,
                run_id: str | None = None, parent_run_id: str | None = None,
                system_metrics: bool = False) -> Iterator[mlflow.ActiveRun]:
    """Yields an active run that ends FINISHED, FAILED (error) or KILLED (Ctrl-C, SIGTERM).

    While the run is open, Ctrl-C and SIGTERM raise KeyboardInterrupt and Terminated
    outside the tracking store's own code only (see STORE_MODULES), so the store stays
    usable for ending the runs.

    `run_id` reopens an existing run (the project's run under `mlflow run`, or a run
    being resumed) and names it `run_name`; otherwise a new run is created, as a child of
    `parent_run_id` if given. `system_metrics` samples CPU and memory into system/* metrics
    while the run is open (benchmarks/system_metrics_bench.py measures its cost).
    """
    if run_id:
        # `mlflow run` created this run with a generated name: it gets the entry point's
        run = mlflow.start_run(run_id=run_id, run_name=run_name, tags=dict(tags or {}),
                               nested=bool(parent_run_id), log_system_metrics=system_metrics)
    else:
        run = mlflow.start_run(experiment_id=ensure_experiment(experiment_name),
                               run_name=run_name, tags=dict(tags or {}),
                               parent_run_id=parent_run_id, nested=bool(parent_run_id),
                               log_system_metrics=system_metrics)
    previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, _raise_terminated),
                signal.SIGINT: signal.signal(signal.SIGINT, _raise_keyboard_interrupt)}
    status = RunStatus.to_string(RunStatus.FAILED)
    try:
        yield run
        status = RunStatus.to_string(RunStatus.FINISHED)
    except BaseException as err:
        if was_interrupted(err):
            status = RunStatus.to_string(RunStatus.KILLED)
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        mlflow.end_run(status=status)


def log_experiment_config(experiment: Experiment, source: str | Path) -> None:
    """Logs the resolved config as dotted params and as `config/experiment.yaml`, and
    the training recipe its family resolves to (`recipe.*`: the published one with the
    config's overrides; a search's folds log their best trial's).

    Also tags the run with the config file path and its fingerprint.
    """
    mlflow.log_params(flat_params(experiment))
    if isinstance(experiment, Experiment):
        mlflow.log_params(resolve(experiment.model.family, experiment.hyperparameters,
                                  experiment.model.optimizer, experiment.training).params())
    mlflow.log_dict(experiment.to_dict(), "config/experiment.yaml")
    mlflow.set_tags({"mammo.config_file": str(source),
                     "mammo.config_hash": experiment.fingerprint()})


def local_source(path: str) -> DatasetSource:
    """Returns the MLflow dataset source of a local folder or file.

    MLflow registers two source classes that both claim a plain path and warns that the
    path "can be interpreted in multiple ways" on every dataset; both give the same source.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The specified dataset source can be "
                                                  "interpreted in multiple ways")
        return resolve_dataset_source(path)


def log_data_input(images: np.ndarray, labels: np.ndarray, source: str, name: str,
                   fingerprint: str, context: str,
                   index: np.ndarray | None = None) -> None:
    """Logs the images (or the part `index` of them) as an MLflow dataset input of the
    active run: named `name`, with `context` (e.g. "train", "holdout") as its context tag,
    the data fingerprint as its digest (a part's digest also hashes its indexes), so the
    UI's Datasets column says which data, and which part of it, a run used."""
    digest = fingerprint
    if index is not None:
        images, labels = images[index], labels[index]
        digest = hashlib.sha256(f"{fingerprint}:".encode() + np.asarray(index, np.int64)
                                .tobytes()).hexdigest()[:16]
    dataset = mlflow.data.from_numpy(images, targets=labels, source=local_source(source),
                                     name=name, digest=digest)
    retry_duplicate(lambda: mlflow.log_input(dataset, context=context))


# what a tracking store's database says when a row's key is already taken
_DUPLICATE_KEY = ("UniqueViolation", "duplicate key", "UNIQUE constraint failed",
                  "Duplicate entry")


def retry_duplicate(call: Callable[[], None], attempts: int = 3) -> None:
    """Runs `call`, again when the store refuses it for a duplicate key.

    Two runs of one experiment that log a dataset the store has not seen yet, at the same
    moment (two users' pipelines, two trials), both find it missing and both insert it:
    MLflow's get-or-create is not atomic, and the loser's request fails with the
    database's unique-key error (measured: PostgreSQL `dataset_pk`, a team server). On the
    next attempt the dataset exists and is only linked to the run.
    """
    for attempt in range(attempts):
        try:
            return call()
        except MlflowException as err:
            if attempt == attempts - 1 or not any(key in str(err) for key in _DUPLICATE_KEY):
                raise


def log_figure(figure: Figure, artifact_file: str) -> None:
    """Logs a matplotlib figure as an artifact and closes it (figures hold memory)."""
    mlflow.log_figure(figure, artifact_file)
    plt.close(figure)


def log_yaml(data: Mapping, artifact_file: str) -> None:
    """Logs plain data (numpy scalars allowed) as a YAML artifact, readable in the UI."""
    mlflow.log_dict(plain(data, string_keys=True), artifact_file)


def log_keras_model(model: keras.Model, example: np.ndarray, name: str = "model") -> str:
    """Logs a Keras model with a tensor signature inferred from `example`; returns its URI."""
    example = example.astype(np.float32)
    signature = infer_signature(example, model.predict(example, verbose=0))
    # No input_example: mlflow.keras.log_model writes it before creating the model folder
    # and fails (mlflow/mlflow#16183, still open in 3.17); the signature carries the spec.
    info = mlflow.keras.log_model(model, name=name, signature=signature,
                                  pip_requirements=runtime_requirements())
    return info.model_uri


def registry_reference(model_uri: str) -> dict[str, str]:
    """Returns {"name", "version", "alias"} of a `models:/name@alias` or `models:/name/N` URI.

    An alias is resolved to the version it points at now; other URIs give empty strings.
    """
    if not model_uri.startswith("models:/"):
        return {"name": "", "version": "", "alias": ""}
    name, _, alias = model_uri[len("models:/"):].partition("@")
    if alias:
        version = mlflow.MlflowClient().get_model_version_by_alias(name, alias).version
        return {"name": name, "version": str(version), "alias": alias}
    name, _, version = name.partition("/")
    return {"name": name, "version": version, "alias": ""}


def runtime_requirements() -> list[str]:
    """Returns pinned pip requirements for loading a logged model elsewhere.

    MLflow's inference of requirements fails for Keras 3 models and would list only keras.
    """
    names = ["keras", "tensorflow-cpu", "numpy", "PyWavelets", "mlflow"]
    pins = []
    for name in names:
        try:
            pins.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:  # e.g. full tensorflow instead of -cpu
            continue
    return pins


class EpochLogger(keras.callbacks.Callback):
    """Keras callback that logs every epoch's metrics to the active MLflow run.

    Steps are epochs counted from 1, so learning curves line up across runs in the UI.
    """

    def on_epoch_end(self, epoch: int, logs: Mapping[str, float] | None = None) -> None:
        if logs:
            mlflow.log_metrics({f"epoch_{k}": float(v) for k, v in logs.items()}, step=epoch + 1)


def was_interrupted(err: BaseException | None) -> bool:
    """Returns True if `err` is, or was caused by, Ctrl-C or SIGTERM.

    A signal that arrives inside a C extension (Ray's wait loop, say) surfaces as a
    SystemError whose cause is the original KeyboardInterrupt or Terminated.
    """
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, (KeyboardInterrupt, Terminated)):
            return True
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return False


# An exception raised by a signal inside the tracking store's code can leave its database
# connection mid-transaction. With SQLite that connection then keeps the file locked: every
# later write of the process fails after a 20 s wait ("database is locked") and the runs it
# should end stay RUNNING (seen once in 7 SIGTERMs during a search). So the exception waits
# until the main thread has left these modules.
STORE_MODULES = ("sqlalchemy.", "mlflow.store.", "alembic.")
REDELIVER_AFTER_S = 0.05


def in_store_call(frame) -> bool:
    """Returns True if `frame` or one of its callers runs tracking-store code."""
    while frame is not None:
        if frame.f_globals.get("__name__", "").startswith(STORE_MODULES):
            return True
        frame = frame.f_back
    return False


def raising_outside_store(make_error: Callable[[int], BaseException]) -> Callable:
    """Returns a signal handler that raises `make_error(signum)` in the main thread, at once
    if it runs outside the tracking store's code, else as soon as it has left it (the
    signal is sent again every REDELIVER_AFTER_S seconds until then)."""
    def handler(signum, frame) -> None:
        if not in_store_call(frame):
            raise make_error(signum)
        timer = threading.Timer(REDELIVER_AFTER_S, os.kill, (os.getpid(), signum))
        timer.daemon = True
        timer.start()
    return handler


_raise_terminated = raising_outside_store(
    lambda signum: Terminated(f"terminated by signal {signum}"))
_raise_keyboard_interrupt = raising_outside_store(lambda signum: KeyboardInterrupt())
