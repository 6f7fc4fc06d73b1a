"""`serve` entry point: the scoring service, until Ctrl-C.

    python -m serve.server                                   # champion on 127.0.0.1:8000
    python -m serve.server --model-uri models:/mammo-microcal/3 --port 8080 --replicas 2
    kill -HUP <pid>     # reload: resolve the alias again and swap models, no downtime

Starts a local Ray node on loopback (or joins RAY_ADDRESS), deploys `serve.app` and
prints the URL. API docs at http://127.0.0.1:8000/docs.
"""
from __future__ import annotations

import argparse
import signal
import sys
import time

import ray
from pydantic import ValidationError
from ray import serve
from ray.serve.schema import ApplicationStatus

from mammo_core.config import ConfigError
from serve.app import bind_app
from serve.model import load_model
from serve.settings import ServeSettings
from tune.cluster import start_ray
from tune.project import DEFAULT_CONFIG, default_model_uri, load_config, run_entry

APP_NAME = "mammo"


def parse_settings(argv: list[str] | None) -> ServeSettings:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=DEFAULT_CONFIG,
                        help="experiment YAML; its registered model name makes the default URI")
    defaults = ServeSettings()
    for name, field in ServeSettings.model_fields.items():
        parser.add_argument(f"--{name.replace('_', '-')}", default=getattr(defaults, name),
                            type=type(getattr(defaults, name)), help=field.description)
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


def deploy(settings: ServeSettings, reload_token: int = 0) -> None:
    """Deploys (or redeploys, reloading the model) the application on the running Serve.

    A redeploy first loads the model in this process: Serve replaces every replica on a
    redeploy, and a rollout whose replicas fail leaves none (measured: 503 until the next
    deploy), so a model that does not load must never reach Serve. Raises ReloadError then.
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


def main(argv: list[str] | None = None) -> int:
    settings = parse_settings(argv)
    reloads = []
    signal.signal(signal.SIGHUP, lambda *_: reloads.append(1))

    def body() -> None:
        print(start_ray(), flush=True)
        serve.start(http_options={"host": settings.host, "port": settings.port})
        try:
            deploy(settings)
            print(f"serving {settings.model_uri} on http://{settings.host}:{settings.port} "
                  f"(POST /predict, GET /model, /healthz, /docs); Ctrl-C stops, "
                  f"kill -HUP reloads", flush=True)
            while True:
                time.sleep(0.5)
                if reloads:
                    reloads.clear()
                    print(reload(settings, int(time.time())), flush=True)
        finally:
            serve.shutdown()
            ray.shutdown()

    return run_entry(body)


if __name__ == "__main__":
    sys.exit(main())
