"""REST scoring throughput and latency: Ray Serve app vs `mlflow models serve` vs in-process.

    python benchmarks/serve_bench.py                       # champion of the benchmark store
    python benchmarks/serve_bench.py --store mlflow.db --seconds 20

Same registered model, same single-image request (`{"inputs": [60x60 ints]}` to MLflow's
`/invocations` on both servers; `/predict` gets it with `"bit_depth": 8`), measured in one
run on one machine: (a) the Ray Serve app (serve/), with direct ingress (the default: the
replica answers HTTP itself) and through Serve's HTTP proxy, on `/invocations` and
`/predict`, (b) `mlflow models serve --env-manager local`, at concurrency 1, 8 and 32 (closed loop: each client sends its next
request when the last one is answered), and (c) in-process batched pyfunc prediction, the
ceiling with no HTTP at all. The load generator runs on the same 2 cores, as a client on
the same host would.
"""
from __future__ import annotations

import argparse
import collections
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import mlflow  # noqa: E402
from ray import serve  # noqa: E402

import tune  # noqa: E402,F401  (loopback Ray environment before ray starts)
from mammo_core.images import quantize, read_image  # noqa: E402
from mammo_core.tracking import registry_reference  # noqa: E402
from serve.server import APP_NAME, deploy, shutdown, start_serving  # noqa: E402
from serve.settings import ServeSettings  # noqa: E402

CONCURRENCY = (1, 8, 32)
MULTI, MULTI_CONCURRENCY = 32, (1, 4, 8)  # requests of 32 images: tools scoring many patches


def load(port: int, path: str, body: bytes | None, clients: int, seconds: float) -> dict:
    """Runs `clients` closed-loop clients for `seconds`; returns throughput and latencies.

    POSTs `body`; with body None it GETs `path` (the no-model transport floor)."""
    latencies, failures, stop = [], [], time.monotonic() + seconds

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        while time.monotonic() < stop:
            start = time.perf_counter()
            if body is None:
                connection.request("GET", path)
            else:
                connection.request("POST", path, body, {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            (latencies if response.status == 200 else failures).append(
                time.perf_counter() - start)
        connection.close()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - began
    ms = np.array(latencies) * 1000
    return {"rps": len(latencies) / elapsed, "p50": float(np.percentile(ms, 50)),
            "p99": float(np.percentile(ms, 99)), "ok": len(latencies), "failed": len(failures)}


def wait_ready(port: int, path: str, body: bytes, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            connection.request("POST", path, body, {"Content-Type": "application/json"})
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"nothing answered on port {port}")


def bench_ray_serve(args, ingress: str, bodies: dict[str, bytes],
                    multi: bytes) -> tuple[dict, list, list, dict]:
    """Returns ({path: single-image levels}, /healthz levels, 32-image /predict levels,
    batch histograms)."""
    settings = ServeSettings(tracking_uri=args.tracking_uri, port=args.port, ingress=ingress,
                             num_replicas=args.replicas, tf_threads=args.tf_threads,
                             batch_wait_timeout_s=args.batch_wait, max_batch_size=args.max_batch,
                             expert_calls=args.expert_calls)
    print(start_serving(settings), flush=True)
    try:
        deploy(settings)
        for path, body in bodies.items():
            wait_ready(args.port, path, body)
            load(args.port, path, body, 8, 3)  # warm-up
        handle = serve.get_app_handle(APP_NAME)
        print(f"replica: experts {handle.status.remote().result()['expert_calls']}", flush=True)
        handle.batch_histogram.remote(reset=True).result()
        scoring, histograms = {path: [] for path in bodies}, {}
        for path, body in bodies.items():
            for c in CONCURRENCY:
                scoring[path].append(load(args.port, path, body, c, args.seconds))
                histograms[f"{path}, 1 image, c={c}"] = handle.batch_histogram.remote(
                    reset=True).result()
        many = []
        for c in MULTI_CONCURRENCY:
            many.append(load(args.port, "/predict", multi, c, args.seconds))
            histograms[f"/predict, {MULTI} images, c={c}"] = handle.batch_histogram.remote(
                reset=True).result()
        # The same path without the model: what HTTP alone costs here.
        floor = [load(args.port, "/healthz", None, c, args.seconds) for c in CONCURRENCY]
        if ingress == "direct":
            print(explain_under_load(args, settings, bodies["/predict"]), flush=True)
        return scoring, floor, many, histograms
    finally:
        shutdown()


def explain_under_load(args, settings: ServeSettings, body: bytes) -> str:
    """Returns a line: /predict's p99 at c=4, idle and while a client keeps sending Deep
    SHAP explanations that time out (each 504 leaves its work running in the background)."""
    explain_once(args.port, body)  # the explanation process started and warm, as in use
    deploy(settings.model_copy(update={"explain_timeout_s": 0.05}), reload_token=1)
    load(args.port, "/predict", body, 4, 2)  # warm-up after the redeploy
    idle = load(args.port, "/predict", body, 4, args.seconds)
    stop, answers = threading.Event(), collections.Counter()

    def explainer() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", args.port, timeout=120)
        while not stop.is_set():
            connection.request("POST", "/explain?method=shap", body,
                               {"Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            answers[response.status] += 1
            time.sleep(0.05)
        connection.close()

    thread = threading.Thread(target=explainer)
    thread.start()
    try:
        busy = load(args.port, "/predict", body, 4, args.seconds)
    finally:
        stop.set()
        thread.join()
    return (f"/predict at c=4, idle: {idle['rps']:.0f} req/s, p99 {idle['p99']:.0f} ms; while "
            f"SHAP explanations time out ({dict(answers)}): {busy['rps']:.0f} req/s, p99 "
            f"{busy['p99']:.0f} ms ({busy['p99'] / idle['p99']:.2f}x idle), "
            f"{busy['failed']} failed")


def explain_once(port: int, body: bytes) -> None:
    """Sends one Deep SHAP explanation and waits for its answer (200)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    connection.request("POST", "/explain?method=shap", body, {"Content-Type": "application/json"})
    response = connection.getresponse()
    response.read()
    connection.close()
    assert response.status == 200, f"/explain answered {response.status}"


def bench_mlflow_serve(args, uri: str, body: bytes, workers: int) -> list[dict]:
    port = args.port + 1
    env = dict(os.environ, MLFLOW_TRACKING_URI=args.tracking_uri,
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    server = subprocess.Popen(["mlflow", "models", "serve", "-m", uri, "-h", "127.0.0.1",
                               "-p", str(port), "-w", str(workers), "--env-manager", "local"],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    try:
        wait_ready(port, "/invocations", body)
        load(port, "/invocations", body, 8, 3)
        return [load(port, "/invocations", body, c, args.seconds) for c in CONCURRENCY]
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


def bench_in_process(uri: str, patch: np.ndarray, seconds: float) -> dict:
    """Returns images/s of pyfunc.predict on batches of 32 (the serving batch size)."""
    model = mlflow.pyfunc.load_model(uri)
    batch = np.repeat(patch[None], 32, axis=0)
    model.predict(batch)
    count, start = 0, time.monotonic()
    while time.monotonic() - start < seconds:
        model.predict(batch)
        count += len(batch)
    return {"rps": count / (time.monotonic() - start)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default=str(ROOT / "benchmarks/results/search.db"))
    parser.add_argument("--model-uri", default="models:/mammo-microcal@champion")
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--port", type=int, default=8300)
    defaults = ServeSettings()
    parser.add_argument("--replicas", type=int, default=defaults.num_replicas)
    parser.add_argument("--tf-threads", default=defaults.tf_threads,
                        help="a number, or auto: the CPUs the replica may use")
    parser.add_argument("--batch-wait", type=float, default=defaults.batch_wait_timeout_s)
    parser.add_argument("--max-batch", type=int, default=defaults.max_batch_size)
    parser.add_argument("--expert-calls", default=defaults.expert_calls,
                        choices=["auto", "sequential", "concurrent", "graph"],
                        help="the replica's experts in turn, at once on threads, or as one "
                             "graph; auto: measured at start")
    parser.add_argument("--mlflow-workers", type=int, nargs="*", default=[1, 2])
    parser.add_argument("--ingress", nargs="+", default=["direct", "proxy"],
                        choices=["direct", "proxy"], help="Ray Serve modes to measure")
    args = parser.parse_args()
    args.tracking_uri = f"sqlite:///{Path(args.store).resolve()}"
    mlflow.set_tracking_uri(args.tracking_uri)
    mlflow.set_registry_uri(args.tracking_uri)
    ref = registry_reference(args.model_uri)  # an alias or a version
    if not ref["version"]:
        sys.exit(f"--model-uri must be models:/<name>@<alias> or models:/<name>/<version>, "
                 f"got {args.model_uri}")
    uri = f"models:/{ref['name']}/{ref['version']}"
    # the stored 8-bit integers, as a client holding the PNG's pixels would send them
    patch = quantize(read_image(sorted((ROOT.parent / "shared/data/microcal/1").glob("*.png"))[0],
                                (60, 60)), 8)
    # MLflow's protocol reads integers at the model's training depth; /predict wants it said
    body = json.dumps({"inputs": [patch.tolist()]}).encode()
    bodies = {"/invocations": body,
              "/predict": json.dumps({"inputs": [patch.tolist()], "bit_depth": 8}).encode()}
    multi = json.dumps({"inputs": [patch.tolist()] * MULTI, "bit_depth": 8}).encode()
    print(f"model {uri}; {args.seconds:.0f} s per level; {vars(args)}")
    rows, multis, histograms = {}, {}, {}
    for ingress in args.ingress:
        scoring, floor, many, counts = bench_ray_serve(args, ingress, bodies, multi)
        for path, levels in scoring.items():
            rows[f"Ray Serve, {ingress} ingress, POST {path} ({args.replicas} replica, "
                 f"{args.tf_threads} TF thread, wait {args.batch_wait * 1000:g} ms, "
                 f"experts {args.expert_calls})"] = levels
        rows[f"Ray Serve, {ingress} ingress, GET /healthz (no model: HTTP path only)"] = floor
        multis[ingress] = many
        histograms.update({f"{ingress}, {level}": c for level, c in counts.items()})
    for workers in args.mlflow_workers:
        rows[f"mlflow models serve, POST /invocations ({workers} worker"
             f"{'s' if workers > 1 else ''})"] = \
            bench_mlflow_serve(args, uri, body, workers)
    ceiling = bench_in_process(uri, patch, args.seconds)
    print("\n| server | " + " | ".join(f"c={c}: req/s, p50, p99 (ms)" for c in CONCURRENCY)
          + " | failed |")
    print("|---" * (len(CONCURRENCY) + 2) + "|")
    for label, results in rows.items():
        print(f"| {label} | " + " | ".join(f"{r['rps']:.0f}, {r['p50']:.0f}, {r['p99']:.0f}"
                                           for r in results)
              + f" | {sum(r['failed'] for r in results)} |")
    print(f"| in-process pyfunc, batches of 32 (ceiling) | {ceiling['rps']:.0f} images/s | | | |")
    for ingress, many in multis.items():
        print(f"\n{MULTI}-image requests to Ray Serve, {ingress} ingress: " + ", ".join(
            f"c={c}: {r['rps'] * MULTI:.0f} images/s ({100 * r['rps'] * MULTI / ceiling['rps']:.0f}"
            f" % of the ceiling), p99 {r['p99']:.0f} ms, {r['failed']} failed"
            for c, r in zip(MULTI_CONCURRENCY, many)))
    print("\nimages per model call (calls):")
    for level, counts in histograms.items():
        calls = sum(counts.values())
        mean = sum(k * v for k, v in counts.items()) / max(calls, 1)
        print(f"  {level}: {calls} calls, mean {mean:.1f} images; {counts}")


if __name__ == "__main__":
    main()
