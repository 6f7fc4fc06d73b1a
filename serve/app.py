"""The Ray Serve application: FastAPI ingress, one batched inference method, hot reload.

    app = build_app(ServeSettings(model_uri="models:/mammo-microcal@champion"))
    serve.run(app, name="mammo", route_prefix="/")

Inference lives in `score` (a @serve.batch method: concurrent requests become one model
call); HTTP parsing lives in the route handlers and `serve.payload`; settings come in as
one typed `ServeSettings`. Bad input is answered with a 4xx JSON {"error": ...} before it
reaches the model, so a bad request never costs a replica.
"""

import asyncio
import base64
import collections
import contextlib
import hashlib
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import mlflow
import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from ray import serve
from ray.serve import Application
from starlette.exceptions import HTTPException

from mammo_core.explanations import overlay_png
from mammo_core.metrics import side_by_side
from mammo_core.patches import PatchError, as_unit_patches
from mammo_core.predictor import table_columns
from mammo_core.training import limit_tensorflow_threads
from serve.explainer import Explainer
from serve.host import WAY_NAMES, fastest_expert_calls, usable_cpus, way_arguments, ways_of
from serve.model import load_model
from serve import scoring
from serve.payload import BadRequest, read_body, read_patches
from serve.settings import ServeSettings

logger = logging.getLogger("ray.serve")
EXPERT_THREADS = 8  # experts of one call at once, at most; a larger ensemble's others queue
api = FastAPI(title="mammogram patch scoring",
              description="Scores mammogram images with a registered ensemble of fold experts; "
                          "GET /model names the study, its classes and image size. MLflow's "
                          "scoring protocol on /invocations. Research only; not for diagnosis.")


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


@api.exception_handler(BadRequest)
async def _bad_request(request: Request, err: BadRequest) -> JSONResponse:
    return error(err.status, err.message)


@api.exception_handler(PatchError)
async def _bad_patches(request: Request, err: PatchError) -> JSONResponse:
    return error(422, str(err))


@api.exception_handler(RequestValidationError)
async def _invalid(request: Request, err: RequestValidationError) -> JSONResponse:
    return error(422, str(err.errors()))


@api.exception_handler(HTTPException)
async def _http(request: Request, err: HTTPException) -> JSONResponse:
    return error(err.status_code, str(err.detail))


def answers(out: dict, class_names: list[str]) -> list[dict]:
    """Returns one answer per image: {"probability", "label", "experts"} for a binary task;
    {"probabilities": {class: p}, "label", "class", "experts": [{class: p}]} for several."""
    if out["probability"].ndim == 1:
        return [{"probability": float(p), "label": int(label),
                 "experts": [float(e) for e in experts]}
                for p, label, experts in zip(out["probability"], out["label"], out["experts"])]
    def by_class(row) -> dict[str, float]:
        return {name: float(p) for name, p in zip(class_names, row)}
    return [{"probabilities": by_class(p), "label": int(label), "class": class_names[label],
             "experts": [by_class(e) for e in experts]}
            for p, label, experts in zip(out["probability"], out["label"], out["experts"])]


def tf_threads(settings: ServeSettings) -> int:
    """Returns the replica's TensorFlow threads: the setting, or with `auto` the CPUs this
    process may use, measured now (a container's quota included)."""
    return usable_cpus() if settings.tf_threads == "auto" else settings.tf_threads


def reading(settings: ServeSettings, model) -> ServeSettings:
    """Returns the settings to read a request with: a study that resamples its images
    (e.g. whole MIAS mammograms) resizes uploaded files whatever `wrong_size` says, and a
    study trained on other files (e.g. JPEG) takes their format too."""
    update = {"wrong_size": "resize"} if model.info.get("resizes") else {}
    extra = [f for f in model.info.get("study_formats", []) if f not in settings.image_formats]
    if extra:
        update["image_formats"] = settings.image_formats + tuple(extra)
    return settings.model_copy(update=update) if update else settings


def explanation_body(result, raw: np.ndarray, model, ensemble: bool) -> dict:
    """Returns the /explain response for a one-patch Explanation (label: ensemble only,
    since the decision threshold belongs to the ensemble)."""
    units = as_unit_patches(raw, tuple(model.info["image_size"]), model.predictor.bit_depth,
                            pairs=model.info["pairs"])
    heatmap = result.maps[0]  # a pair's two maps side by side, like the overlay
    png = overlay_png(side_by_side(units[0]), heatmap, signed=result.method != "gradcam")
    probability = float(result.probability[0])
    return {"method": result.method, "probability": probability,
            "label": int(probability >= model.predictor.ensemble.threshold) if ensemble else None,
            "expected_value": result.expected_value, "experts": list(result.experts),
            # SHAP maps add up to this (the weighted probability before calibration)
            "explained_probability": float(result.explained[0]),
            "heatmap": np.round(heatmap, 6).tolist(),
            "overlay_png": base64.b64encode(png).decode("ascii"),
            "model": {"name": model.info["name"], "version": model.info["version"]}}


# Module-level helpers used by the deployment must come before it: @serve.deployment
# serialises the class when this module runs, and a replica sees only the globals that
# existed then (measured: a helper defined below it raised NameError in the replica).
@serve.deployment
@serve.ingress(api)
class PatchScorer:
    def __init__(self, settings: dict):
        self.apply(ServeSettings(**settings))
        self.threads = tf_threads(self.settings)
        limit_tensorflow_threads(self.threads)
        self.reload_token, self.reload_error, self.configured = None, None, False
        self.model = None
        # threads for one model call's experts, if they score faster at once (serve/host.py)
        self.expert_threads = ThreadPoolExecutor(EXPERT_THREADS, thread_name_prefix="expert")
        self.way, self.expert_calls = "sequential", "not chosen yet (no model)"
        if self.settings.model_uri:  # `serve run` configs name it in args; bind_app in user_config
            self.first_model(load_model(self.settings.model_uri, self.settings.tracking_uri))
        # Explanations run one at a time in a child process, stopped while scoring runs
        # (serve/explainer.py): SHAP takes seconds of CPU, and in this process it held the
        # interpreter lock and TensorFlow's threads that scoring needs.
        self.explainer = Explainer(self.threads)
        self.batch_sizes = collections.Counter()
        self.in_flight = 0  # scoring requests (/predict, /invocations) between arrival and answer

    def reconfigure(self, user_config: dict) -> None:
        """Loads the model named by `model_uri` (else the settings'), resolving its alias
        again whenever `reload_token` or the URI changes.

        Requests in flight finish on the model they started with; new ones get the new.
        A failed reload keeps the model in use and records the error for /model and the
        log; only a replica that has no model yet fails with it. `settings`, when given,
        replace the replica's settings in place (all but tf_threads take effect).
        """
        if "settings" in user_config:
            self.apply(ServeSettings(**user_config["settings"]))
        uri = user_config.get("model_uri") or self.settings.model_uri
        token = user_config.get("reload_token")
        if self.model is None or (not self.configured and uri != self.model.info["model_uri"]):
            # a starting replica has nothing to fall back to: a failure here is its own
            self.first_model(load_model(uri, self.settings.tracking_uri))
        elif self.configured and (token, uri) != (self.reload_token, self.model.info["model_uri"]):
            self.reload(uri)
        self.reload_token, self.configured = token, True

    def first_model(self, model) -> None:
        """Takes the replica's first model and chooses, on it, how its experts are called:
        the setting, or with `auto` what measures faster here (logged; the start line says
        which, through `status`)."""
        self.model = model
        choice, ways = self.settings.expert_calls, ways_of(model.predictor)
        if choice not in ("auto", *ways):
            self.way, why = "sequential", f"the model's own code cannot call them {choice}"
        elif choice != "auto" or len(model.predictor.experts) < 2:
            self.way, why = ("sequential" if choice == "auto" else choice,
                             "set" if choice != "auto" else "one expert")
        else:
            self.way, why = fastest_expert_calls(model.predictor, self.expert_threads)
        self.expert_calls = f"{WAY_NAMES[self.way]} ({why})"
        logger.info("experts are called %s", self.expert_calls)

    def reload(self, uri: str) -> None:
        """Swaps in the model at `uri`; on failure keeps the current one and records why."""
        try:
            self.model = load_model(uri, self.settings.tracking_uri)
            self.reload_error = None
        except Exception as err:  # noqa: BLE001 — any failure: keep serving what works
            self.reload_error = (f"reload of {uri} failed, still serving version "
                                 f"{self.model.info['version']}: {type(err).__name__}: {err}")
            logger.error(self.reload_error)

    def __del__(self) -> None:  # Serve calls it when the replica shuts down
        self.explainer.close()
        self.expert_threads.shutdown(wait=False)

    def apply(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.score.set_max_batch_size(settings.max_batch_size)
        self.score.set_batch_wait_timeout_s(settings.batch_wait_timeout_s)

    def batch_histogram(self, reset: bool = False) -> dict[int, int]:
        """Returns {images per model call: calls} since the start or the last reset: whether
        concurrent requests really share model calls (benchmarks/serve_bench.py)."""
        counts = dict(sorted(self.batch_sizes.items()))
        if reset:
            self.batch_sizes.clear()
        return counts

    def status(self) -> dict:
        """Returns the served name, version, its run and source, the last reload error and
        the TensorFlow threads and the way of calling the experts chosen at start-up (for
        the server's start line)."""
        return {key: self.model.info.get(key, "") for key in ("name", "version", "run_id",
                                                              "source")} | {
            "reload_error": self.reload_error, "tf_threads": self.threads,
            "expert_calls": self.expert_calls}

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.02,
                 batch_size_fn=lambda batches: sum(len(b) for b in batches))
    async def score(self, batches: list[np.ndarray]) -> list[tuple[dict, dict]]:
        """Scores many requests' patches in one model call; returns (outputs, model info) each.

        Batches are counted in images, not requests, so one call never exceeds
        `max_batch_size` images.
        """
        model = self.model
        sizes = np.cumsum([len(b) for b in batches])[:-1]
        self.batch_sizes[int(sum(len(b) for b in batches))] += 1
        out = await asyncio.to_thread(self.run_experts, model.predictor, np.concatenate(batches))
        parts = {k: np.split(v, sizes) for k, v in out.items()}
        return [({k: parts[k][i] for k in parts}, model.info) for i in range(len(batches))]

    def run_experts(self, predictor, units: np.ndarray) -> dict[str, np.ndarray]:
        """Returns the predictor's output, its experts called the chosen way where the
        model (a reloaded one too) can, else one after the other."""
        way = self.way if self.way in ways_of(predictor) else "sequential"
        return predictor.predict(units, **way_arguments(way, self.expert_threads))

    async def score_all(self, units: np.ndarray) -> tuple[dict, dict]:
        """Scores a request of any size in chunks of at most `max_batch_size` images.

        A batch waits for company (up to `batch_wait_timeout_s`) only while other requests
        are in flight on this replica: a lone request runs at once, so low load pays no
        wait, and under load requests that are still being read join the next model call
        (measured: 2.4 images per call with a fixed 5 ms wait at 32 clients, 7.3 with 20 ms).
        """
        busy = self.in_flight > 1
        self.score.set_batch_wait_timeout_s(self.settings.batch_wait_timeout_s if busy else 0.0)
        step = self.settings.max_batch_size
        answers = await asyncio.gather(*(self.score(units[i:i + step])
                                         for i in range(0, len(units), step)))
        outputs = {k: np.concatenate([out[k] for out, _ in answers]) for k in answers[0][0]}
        return outputs, answers[-1][1]

    @contextlib.contextmanager
    def scoring_request(self):
        """Counts a scoring request in flight; the explanation process is stopped from the
        first one's arrival to the last one's answer (serve/explainer.py)."""
        self.in_flight += 1
        if self.in_flight == 1:
            self.explainer.pause()
        try:
            yield
        finally:
            self.in_flight -= 1
            if self.in_flight == 0:
                self.explainer.resume()

    @api.post("/predict")
    async def predict(self, request: Request) -> dict:
        """Scores patches: JSON {"images": [base64]}, {"inputs": [[[...]]]} or multipart files."""
        with self.scoring_request():
            raw = await read_patches(request, reading(self.settings, self.model),
                                     self.model.info["image_size"],
                                     self.model.predictor.bit_depth)
            units = as_unit_patches(raw, tuple(self.model.info["image_size"]),
                                    self.model.predictor.bit_depth, pairs=self.model.info["pairs"])
            out, info = await self.score_all(units)
        return {"predictions": answers(out, self.model.predictor.class_names),
                "model": {"name": info["name"], "version": info["version"]}}

    @api.post("/invocations")
    async def invocations(self, request: Request) -> Response:
        """MLflow's scoring protocol (`mlflow models serve`'s route and answer): JSON with
        one of inputs / instances / dataframe_split / dataframe_records, CSV or Parquet;
        answers {"predictions": [one pyfunc row per image]}, errors as MLflow's
        {"error_code", "message"}. Same batching and limits as /predict."""
        model = self.model
        try:
            with self.scoring_request():
                raw = await self.invocation_patches(request, model)
                units = as_unit_patches(raw, tuple(model.info["image_size"]),
                                        model.predictor.bit_depth, pairs=model.info["pairs"])
                out, _ = await self.score_all(units)
        except (BadRequest, PatchError) as err:
            return scoring.refusal(err)
        # the app's own code: a model registered earlier ships an older mammo_core
        return scoring.predictions_response(table_columns(out, model.predictor.class_names))

    async def invocation_patches(self, request: Request, model) -> np.ndarray:
        """Returns an /invocations body's raw patches, read the way the pyfunc reads them."""
        settings = reading(self.settings, model)
        body = await read_body(request, settings)
        decode = scoring.decoder(settings, tuple(model.info["image_size"]),
                                 model.predictor.bit_depth)

        def parse() -> np.ndarray:
            parsed = scoring.model_input(body, request.headers.get("content-type"), settings)
            try:
                return scoring.patches(parsed, model.info, decode)
            except (PatchError, BadRequest):
                raise
            except Exception as err:  # noqa: BLE001 — any failure here is the body's fault
                raise BadRequest(400, f"malformed input: {type(err).__name__}: {err}") from err
        return await asyncio.to_thread(parse)

    @api.get("/ping")
    @api.get("/health")
    async def ping(self) -> Response:
        """MLflow's health check: 200 once the model is loaded."""
        return Response("\n", status_code=200 if self.model else 404,
                        media_type="application/json")

    @api.get("/version")
    async def version(self) -> Response:
        """The MLflow version, as `mlflow models serve` answers it."""
        return Response(mlflow.__version__, media_type="application/json")

    @api.post("/explain")
    async def explain_patch(self, request: Request, method: str = "gradcam",
                            expert: int | None = None) -> dict:
        """Explains one patch (same bodies as /predict): `?method=gradcam|shap`, optionally
        `&expert=k` for one fold expert instead of the weighted ensemble.

        Returns the heatmap as a raw array and as a base64 PNG overlay. 503 while another
        explanation runs on this replica; 504 past `explain_timeout_s`.
        """
        if method not in ("gradcam", "shap"):
            raise BadRequest(422, f"method must be 'gradcam' or 'shap', got '{method}'")
        model = self.model
        if len(model.predictor.class_names) > 2:
            raise BadRequest(422, "explanations are drawn for binary models only; this model "
                                  f"has {len(model.predictor.class_names)} classes")
        raw = await read_patches(request, reading(self.settings, model), model.info["image_size"],
                                 model.predictor.bit_depth)
        if len(raw) != 1:
            raise BadRequest(422, f"/explain takes exactly one image, got {len(raw)}")
        if self.explainer.busy():
            return error(503, "an explanation is already running on this replica; retry later")
        running = self.explainer.submit(*model.source, raw, method, expert)
        try:
            # shield: a timeout stops the wait, not the work, whose slot stays taken
            result = await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(running)),
                                            self.settings.explain_timeout_s)
        except asyncio.TimeoutError:
            return error(504, f"explanation took longer than {self.settings.explain_timeout_s} s; "
                              "it finishes in the background, and this replica takes no other "
                              "explanation until then")
        except ValueError as err:  # no stored background, expert out of range
            raise BadRequest(422, str(err)) from err
        except BrokenProcessPool as err:  # the child died (memory) or could not load the model
            self.explainer.close()  # the next request starts a new one
            return error(503, f"the explanation process failed ({err}); retry later")
        return explanation_body(result, raw, model, ensemble=expert is None)

    @api.get("/healthz")
    async def healthz(self) -> dict:
        return {"status": "ok", "model": self.model.info["name"],
                "version": self.model.info["version"]}

    @api.get("/model")
    async def describe(self) -> dict:
        """Name, version, alias, model-card metrics, the input specification and, after a
        failed reload, `reload_error` (the version reported is the one still served)."""
        return self.model.info | {"reload_error": self.reload_error}


# What a replica's constructor gets from bind_app: the rest arrives in user_config.
STARTUP_SETTINGS = {"model_uri", "tracking_uri", "tf_threads", "expert_calls"}


def build_app(settings: ServeSettings | dict) -> Application:
    """Returns the application; `serve run` imports it as serve.app:build_app. The file's
    `user_config` replaces the one bind_app makes, so every setting (the model URI too)
    goes to the constructor here."""
    settings = ServeSettings(**settings) if isinstance(settings, dict) else settings
    return bound(settings, {"reload_token": 0, "model_uri": settings.model_uri},
                 settings.model_dump())


def bind_app(settings: ServeSettings | dict, reload_token: int = 0) -> Application:
    """Returns the bound application; deploying it again with another `reload_token` or
    `model_uri` reloads the model in place (the alias is resolved again): the URI travels
    in `user_config`, so a bad one leaves the running replicas on the model they have.

    The settings travel in `user_config` too, and the constructor gets only what a replica
    needs to start. The deployment's version is a digest of those: a redeploy that keeps
    them is a lightweight update (`reconfigure` on the running replicas) instead of a
    rollout of new ones. With direct ingress a new replica could not take the port while
    the old one holds it."""
    settings = ServeSettings(**settings) if isinstance(settings, dict) else settings
    return bound(settings, live_config(settings, reload_token),
                 settings.model_dump(include=STARTUP_SETTINGS))


def live_config(settings: ServeSettings, reload_token: int) -> dict:
    """Returns the user_config of PatchScorer.reconfigure for `settings`."""
    return {"reload_token": reload_token, "model_uri": settings.model_uri,
            "settings": settings.model_dump()}


def bound(settings: ServeSettings, user_config: dict, args: dict) -> Application:
    # `version` is Serve's own mechanism for config-file deploys (a digest of the app's
    # arguments); the Python API hides it behind `_internal` and else draws a random one.
    # The model URI is left out: another model reaches running replicas via user_config.
    startup = {k: v for k, v in args.items() if k != "model_uri"}
    version = hashlib.sha256(json.dumps(startup, sort_keys=True).encode()).hexdigest()[:16]
    return PatchScorer.options(
        version=version, _internal=True,
        num_replicas=settings.num_replicas,
        max_ongoing_requests=settings.max_ongoing_requests,
        max_queued_requests=settings.max_queued_requests,
        ray_actor_options={"num_cpus": settings.replica_cpus},
        user_config=user_config).bind(args)
