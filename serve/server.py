"""`serve` entry point: the scoring service, until Ctrl-C or SIGTERM.

    python -m serve.server                                   # champion on 127.0.0.1:8000
    python -m serve.server --model-uri models:/mammo-microcal/3 --port 8080 --replicas 2
    kill -HUP <pid>     # reload: resolve the alias again and swap models, no downtime

Starts a local Ray node on loopback (or joins RAY_ADDRESS), deploys `serve.app` and
prints the URL. API docs at http://127.0.0.1:8000/docs. Ctrl-C, SIGTERM (a process
manager's stop) or the end of the `mlflow run` that started it shut Serve down, release
the port, print one line and end the project's run FINISHED.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from typing import Callable, Iterator

import mlflow
import ray
from mlflow.exceptions import MlflowException
from pydantic import ValidationError
from ray import serve
from ray.serve.schema import ApplicationStatus

from mammo_core.config import ConfigError
from mammo_core.tracking import raising_outside_store, registry_reference, tracking_uri
from serve.app import bind_app
from serve.model import load_model
from serve.ports import free_port, port_bindable, port_listening
from serve.settings import ServeSettings
from tune.cluster import start_ray
from tune.project import (DEFAULT_CONFIG, PROJECT_ROOT, UsageError, default_model_uri, load_config,
                          run_entry)

APP_NAME = "mammo"
SHUTDOWN_WAIT_S = 15  # Serve's graceful shutdown, at most


def parse_settings(argv: list[str] | None) -> ServeSettings:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG,
                        help="experiment YAML; its registered model name makes the default URI")
    defaults = ServeSettings()
    for name, field in ServeSettings.model_fields.items():
        default = getattr(defaults, name)
        several = isinstance(default, tuple)  # e.g. --image-formats PNG PPM
        parser.add_argument(f"--{name.replace('_', '-')}", default=default,
                            type=str if several else type(default),
                            nargs="+" if several else None, help=field.description)
    parser.set_defaults(model_uri="")
    args = vars(parser.parse_args(argv))
    try:
        experiment, _ = load_config(args.pop("config"))
        args["model_uri"] = args["model_uri"] or default_model_uri(experiment)
        return ServeSettings(**args)
    except ConfigError as err:
        parser.error(str(err))
    except ValidationError as err:
        parser.error("; ".join(f"--{e['loc'][0].replace('_', '-')}: {e['msg']}"
                               for e in err.errors()))


class ReloadError(RuntimeError):
    """A redeploy was refused because its model does not load; the old one still serves."""


# Ray Serve's direct ingress (experimental in Ray 2.60): the replica runs the HTTP server.
# The variables must be in the environment before Ray starts: Serve's controller and
# replicas read them when they import. No draining and no quarantine of a released port:
# there is no external load balancer to wait for, and a restarted replica needs the port.
def direct_ingress_env(port: int) -> dict[str, str]:
    """Returns the variables that make the replica answer on `port` itself."""
    return {"RAY_SERVE_ENABLE_DIRECT_INGRESS": "1",
            "RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT": str(port),
            "RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT": str(port + 1),  # exclusive
            "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "0",
            "RAY_SERVE_PORT_QUARANTINE_S": "0"}


def ingress_of(settings: ServeSettings, new_local_node: bool) -> str:
    """Returns "direct" when the replica may answer on the port itself: one replica, on a
    local node this process starts (a cluster's processes, or a Ray already running, were
    started without the variables); else "proxy"."""
    return "direct" if settings.ingress == "direct" and settings.num_replicas == 1 \
        and new_local_node else "proxy"


def start_serving(settings: ServeSettings) -> str:
    """Starts (or joins) Ray and starts Serve for `settings`; returns a line saying where
    Ray runs and how requests reach the replicas."""
    new_local_node = not os.environ.get("RAY_ADDRESS") and not ray.is_initialized()
    ingress, proxy_port = ingress_of(settings, new_local_node), settings.port
    if port_listening(settings.host, settings.port):
        raise UsageError(f"port {settings.port} is taken: a server answers on "
                         f"{settings.host}:{settings.port}; stop it or choose another --port")
    if ingress == "direct":
        wait_until_bindable(settings.host, settings.port)
        os.environ.update(direct_ingress_env(settings.port))
        # Serve starts its HTTP proxy all the same: on a free port, off the user's
        proxy_port = free_port(settings.host)
    with sheltered_from_group_stop():
        line = start_ray()
        serve.start(http_options={"host": settings.host, "port": proxy_port})
    how = ("direct ingress: the replica answers on the port itself" if ingress == "direct"
           else f"through Serve's HTTP proxy, {settings.num_replicas} replica(s)")
    return f"{line}; {how}"


@contextmanager
def sheltered_from_group_stop() -> Iterator[None]:
    """Ray's processes started inside (its node, and through it Serve's controller, proxy
    and replicas) block SIGTERM, as Ray already has them block SIGINT.

    A service manager stops a unit with SIGTERM to every process of it at once. Ray's
    processes would die with it, and the driver with them (exit 1 once its raylet is
    gone), before this process could end its run and print its line (measured: the run
    left RUNNING, nothing printed). Blocked there, the signal reaches this process alone,
    which stops them in order; a signal that arrives meanwhile waits until the end.
    """
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


# Serve's direct-ingress server binds without SO_REUSEADDR, so after a server on the same
# port has closed connections, the port stays unusable while they sit in TIME_WAIT (60 s
# on Linux): measured, a restart right after a stop failed to deploy. (Those TIME_WAIT
# entries block Serve's proxy socket too: measured with `serve run` on the same port.)
PORT_WAIT_S = 75


def wait_until_bindable(host: str, port: int) -> None:
    """Returns once `port` can be bound the way direct ingress binds it, waiting out
    TIME_WAIT (with one line); raises UsageError if it still cannot after PORT_WAIT_S
    seconds (Serve's proxy could not bind it either)."""
    deadline, said = time.monotonic() + PORT_WAIT_S, False
    while not port_bindable(host, port):
        if time.monotonic() > deadline:
            raise UsageError(f"port {port} is still held by closed connections after "
                             f"{PORT_WAIT_S} s; choose another --port")
        if not said:
            print(f"port {port} is held by closed connections (TIME_WAIT); waiting up to "
                  f"{PORT_WAIT_S} s", flush=True)
            said = True
        time.sleep(1)


def deploy(settings: ServeSettings, reload_token: int = 0) -> None:
    """Deploys (or redeploys, reloading the model) the application on the running Serve.

    Settings and the model reach the running replicas in place; only a change of the
    startup settings (serve.app.STARTUP_SETTINGS, replica_cpus) rolls out new ones. A
    redeploy first loads the model in this process: a rollout whose replicas fail leaves
    none (measured: 503 until the next deploy), so a model that does not load must never
    reach Serve. Raises ReloadError then.
    """
    serving = serving_version()
    if serving is not None:
        try:
            load_model(settings.model_uri, settings.tracking_uri)
        except Exception as err:  # noqa: BLE001 — whatever breaks the load, keep the old
            raise ReloadError(f"reload of {settings.model_uri} failed, still serving version "
                              f"{serving}: {type(err).__name__}: {err}") from err
    serve.run(bind_app(settings, reload_token), name=APP_NAME, route_prefix="/")


def serving_version() -> str | None:
    """Returns the model version the running application serves, or None if none runs."""
    app = serve.status().applications.get(APP_NAME)
    if app is None or app.status != ApplicationStatus.RUNNING:
        return None
    return replica_status()["version"]


def replica_status() -> dict:
    """Returns a replica's {"version", "reload_error"} (PatchScorer.status)."""
    return serve.get_app_handle(APP_NAME).status.remote().result(timeout_s=60)


def reload(settings: ServeSettings, token: int) -> str:
    """Redeploys with a new token (replicas resolve the alias again); returns one line.

    A reload that fails keeps the service on the model it had, and says so: the server
    must not go down because the alias now points at a broken version.
    """
    try:
        deploy(settings, token)
        status = replica_status()
    except ReloadError as err:
        return str(err)
    except Exception as err:  # noqa: BLE001 — report, and keep the server up
        return f"reload of {settings.model_uri} failed: {type(err).__name__}: {err}"
    if status["reload_error"]:
        return status["reload_error"]
    return f"reloaded {settings.model_uri}: serving version {status['version']}"


class OperatorStop(BaseException):
    """An operator asked the service to stop (SIGTERM, Ctrl-C, or `mlflow run` gone)."""


def stop_on_signals() -> None:
    """SIGTERM and SIGINT raise OperatorStop: process managers stop services with SIGTERM,
    and both must shut Serve down and end the run, not kill the process half-way (nor in
    the middle of a tracking-store call, which would leave the run RUNNING)."""
    handler = raising_outside_store(lambda signum: OperatorStop(signal.Signals(signum).name))
    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def wait_for_stop(settings: ServeSettings, reloads: list, parent: int | None) -> None:
    """Serves until OperatorStop; reloads on SIGHUP. Raises OperatorStop when `parent` (the
    `mlflow run` that started this one, killed with SIGTERM) is gone; None: never."""
    while True:
        time.sleep(0.5)
        if parent is not None and os.getppid() != parent:
            raise OperatorStop(f"parent process {parent} exited")
        if reloads:
            reloads.clear()
            print(reload(settings, int(time.time())), flush=True)


@contextmanager
def project_run(settings: ServeSettings) -> Iterator[Callable[[], None]]:
    """Under `mlflow run` (MLFLOW_RUN_ID set), keeps the project's run open while serving:
    named `serve-<model>-v<version>` first, FINISHED after an operator stop (FAILED if
    serving failed). Yields `operator_stop`, which ends the run FINISHED at once (call it
    before a slow shutdown). Standalone, a no-op."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    if not run_id:
        yield lambda: None
        return
    uri = settings.tracking_uri or tracking_uri(PROJECT_ROOT)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    name_run(client, run_id, settings.model_uri)
    ended = []

    def operator_stop() -> None:
        if not ended:
            client.set_terminated(run_id, "FINISHED")
            if os.getppid() != 1:  # `mlflow run` still there (else it died with the group)
                keep_finished_after(os.getppid(), run_id, uri)
            ended.append(True)

    status = "FAILED"
    try:
        yield operator_stop
        status = "FINISHED"
    except OperatorStop:
        operator_stop()
        raise
    finally:
        if not ended:
            client.set_terminated(run_id, status)


# After Ctrl-C, `mlflow run` marks its run FAILED once this process has exited, whatever
# the run's status: its check compares the status string with integer codes (MLflow
# 3.17, `_maybe_set_run_terminated`). So a detached helper waits for `mlflow run` to exit
# and restores FINISHED for an operator stop.
_KEEP_FINISHED = """
import os, sys, time
import mlflow
parent, run_id, uri = int(sys.argv[1]), sys.argv[2], sys.argv[3]
deadline = time.time() + 120
while time.time() < deadline:
    try:
        os.kill(parent, 0)
    except OSError:
        break
    time.sleep(0.2)
client = mlflow.MlflowClient(uri)
run = client.get_run(run_id)
if run.info.status != "FINISHED":
    client.set_terminated(run_id, "FINISHED", end_time=run.info.end_time)
"""


def keep_finished_after(parent: int, run_id: str, uri: str) -> None:
    """Starts the helper that restores FINISHED once `parent` (`mlflow run`) has exited."""
    subprocess.Popen([sys.executable, "-c", _KEEP_FINISHED, str(parent), run_id, uri],
                     start_new_session=True, stdin=subprocess.DEVNULL,
                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def name_run(client: mlflow.MlflowClient, run_id: str, model_uri: str) -> None:
    """Names the run after the version `model_uri` resolves to now and logs that version;
    an unknown model is left to the deploy, which reports it."""
    try:
        reference = registry_reference(model_uri)
    except MlflowException:
        return
    if reference["name"]:
        client.update_run(run_id, name=f"serve-{reference['name']}-v{reference['version']}")
        client.log_param(run_id, "served_model_version", reference["version"])
    client.set_tag(run_id, "mammo.kind", "serve")


def loaded(model_uri: str) -> str:
    """Returns what the replica loaded, for the log: the URI, the version it resolved to,
    the version's run and source. An alias can move; `models:/name/N` pins one version."""
    status = replica_status()
    return (f"{model_uri} = version {status['version']} (run {status['run_id'] or '-'}, "
            f"source {status['source'] or '-'}; {status['tf_threads']} TensorFlow threads; "
            f"experts {status['expert_calls']})")


def shutdown() -> None:
    """Stops Serve and Ray, releasing the port; a second signal meanwhile is ignored."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for name in direct_ingress_env(0):  # a later Ray in this process starts without them
        os.environ.pop(name, None)
    if not ray.is_initialized():  # stopped before Ray started
        return
    # Ctrl-C in a terminal reaches Ray's own processes too; if they died first, Serve's
    # graceful shutdown waits on them: bounded here so the port is released regardless.
    stopping = threading.Thread(target=serve.shutdown, daemon=True)
    stopping.start()
    stopping.join(timeout=SHUTDOWN_WAIT_S)
    ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    # Under `mlflow run` only (a server started with nohup outlives its shell); taken now:
    # `mlflow run` may be stopped while the model loads.
    parent = os.getppid() if os.environ.get("MLFLOW_RUN_ID") else None
    settings = parse_settings(argv)
    reloads = []
    signal.signal(signal.SIGHUP, lambda *_: reloads.append(1))
    stop_on_signals()

    def body() -> None:
        address = f"http://{settings.host}:{settings.port}"
        try:
            with project_run(settings) as operator_stop:
                try:
                    print(start_serving(settings), flush=True)
                    stop_on_signals()  # again: connecting to Ray installs its own SIGTERM exit
                    deploy(settings)
                    print(f"serving {loaded(settings.model_uri)} on {address} (POST /predict, "
                          f"/invocations; GET /model, /healthz, /ping, /docs); Ctrl-C stops, "
                          f"kill -HUP reloads", flush=True)
                    wait_for_stop(settings, reloads, parent)
                except OperatorStop:
                    # the run ends first: a manager that kills what is left at the end of
                    # its grace period must find it FINISHED, not RUNNING
                    operator_stop()
                    raise
                finally:
                    shutdown()
        except OperatorStop as stop:
            print(f"stopped ({stop}): {address} released, Serve and Ray shut down", flush=True)

    return run_entry(body)


if __name__ == "__main__":
    sys.exit(main())
