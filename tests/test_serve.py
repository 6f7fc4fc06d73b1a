"""The Ray Serve application over real HTTP on 127.0.0.1, serving the registered model.

A real Ray node and Serve: predictions equal the pyfunc's, 200 concurrent requests,
the bad-input matrix (each a 4xx JSON error, the service still answering), a reload
after the alias moves with requests in flight, backpressure, and a clean shutdown.
"""
from __future__ import annotations

import base64
import http.client
import io
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import psutil
import pytest
from conftest import SMOKE, copy_store, free_port, use_store
from mlflow.pyfunc.scoring_server.client import ScoringServerClient
from PIL import Image

from mammo_core.config import load_experiment
from serve.client import ServiceError, score_files
from serve.app import PatchScorer
from serve.server import deploy, reload, replica_status, shutdown, start_serving
from serve.settings import ServeSettings
from tune.register import register_search

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
NAME = "mammo-microcal"
LIMITS = dict(max_images_per_request=8, max_body_bytes=200_000)


@pytest.fixture(scope="module")
def store(pipeline_store, tmp_path_factory) -> Path:
    """This module's copy of the session's pipeline store: it registers versions and moves
    the alias."""
    return copy_store(pipeline_store, tmp_path_factory.mktemp("serve_store") / "store")


@pytest.fixture(scope="module")
def service(store):
    """Yields (base URL, settings) of a running application; shuts Serve and Ray down after."""
    mp = pytest.MonkeyPatch()
    use_store(store, mp)
    port = free_port()
    # the explanation tests check what comes back, not how fast: the first /explain starts
    # the explanation process, which under a loaded suite (3 workers on 2 cores) overran
    # the default 30 s deadline; the deadline's own tests set 0.001 s
    settings = ServeSettings(tracking_uri=f"sqlite:///{store / 'mlflow.db'}",
                             port=port, explain_timeout_s=300.0, **LIMITS)
    assert "direct ingress" in start_serving(settings)  # what `serve` runs by default
    deploy(settings)
    yield f"http://127.0.0.1:{port}", settings
    shutdown()
    mp.undo()
    with pytest.raises(OSError):  # nothing listens any more
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)


@pytest.fixture(scope="module")
def files(shared_data) -> list[Path]:
    return sorted((shared_data / "0").glob("*.png"))[:3] + sorted((shared_data / "1").glob("*.png"))[:3]


def request(url: str, data: bytes | None = None, content_type: str = "application/json",
            timeout: float = 60) -> tuple[int, dict]:
    req = urllib.request.Request(url, data, {"Content-Type": content_type} if data else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        text = err.read().decode(errors="replace")
        try:
            return err.code, json.loads(text)
        except json.JSONDecodeError:  # Ray's proxy answers overload (503) in plain text
            return err.code, {"text": text}


def multipart(files: list[Path]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    parts = [f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\""
             f"{f.name}\"\r\nContent-Type: image/png\r\n\r\n".encode() + f.read_bytes() + b"\r\n"
             for f in files]
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def test_http_predictions_equal_pyfunc_predictions_in_every_input_format(service, files):
    url, _ = service
    patches = np.stack([np.asarray(Image.open(f)) for f in files])  # the stored uint8 pixels
    champion = mlflow.MlflowClient().get_model_version_by_alias(NAME, "champion")
    expected = mlflow.pyfunc.load_model(f"models:/{NAME}/{champion.version}").predict(patches)
    images = [base64.b64encode(f.read_bytes()).decode() for f in files]
    answers = [request(f"{url}/predict", json.dumps({"images": images}).encode()),
               request(f"{url}/predict", json.dumps({"inputs": patches.tolist(),
                                                             "bit_depth": 8}).encode()),
               request(f"{url}/predict", *multipart(files))]
    for status, body in answers:
        assert status == 200, body
        assert body["model"] == {"name": NAME, "version": str(champion.version)}
        got = [p["probability"] for p in body["predictions"]]
        np.testing.assert_allclose(got, expected["probability"], atol=1e-6)
        assert [p["label"] for p in body["predictions"]] == expected["label"].tolist()
        assert len(body["predictions"][0]["experts"]) == 2
    assert [r["label"] for r in score_files(files, url)] == expected["label"].tolist()


@pytest.fixture(scope="module")
def mlflow_server(store):
    """Yields the base URL of `mlflow models serve` on the champion's version, or skips (with
    its last output) where it cannot start on this machine."""
    port = free_port()
    uri = f"sqlite:///{store / 'mlflow.db'}"
    version = mlflow.MlflowClient(uri).get_model_version_by_alias(NAME, "champion").version
    log = store.parent / f"mlflow-models-serve-{port}.log"
    env = dict(os.environ, MLFLOW_TRACKING_URI=uri, MLFLOW_REGISTRY_URI=uri,
               PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    with open(log, "wb") as out:
        server = subprocess.Popen(["mlflow", "models", "serve", "-m", f"models:/{NAME}/{version}",
                                   "-h", "127.0.0.1", "-p", str(port), "-w", "1",
                                   "--env-manager", "local"], env=env, stdout=out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    try:
        try:
            ScoringServerClient("127.0.0.1", port).wait_server_ready(180, server)
        except RuntimeError as err:
            pytest.skip(f"`mlflow models serve` did not start here: {err}; its log ends: "
                        f"{log.read_text(errors='replace')[-600:]}")
        yield f"http://127.0.0.1:{port}"
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)


def stored_patches(files: list[Path]) -> np.ndarray:
    return np.stack([np.asarray(Image.open(f)) for f in files])  # the stored uint8 pixels


def champion_frame(patches: np.ndarray) -> pd.DataFrame:
    champion = mlflow.MlflowClient().get_model_version_by_alias(NAME, "champion")
    return mlflow.pyfunc.load_model(f"models:/{NAME}/{champion.version}").predict(patches)


def invocation_bodies(files: list[Path]) -> dict[str, tuple[bytes, str]]:
    """Returns {form: (body, content type)}: the same patches in every form MLflow's
    scoring protocol documents, as `mlflow models serve` clients send them (two patches,
    one of each class: floats as JSON text stay under the service's body limit)."""
    patches = stored_patches(files)
    flat = pd.DataFrame(patches.reshape(len(patches), -1))
    b64 = [base64.b64encode(f.read_bytes()).decode() for f in files]
    forms = {
        "inputs": {"inputs": patches.tolist()},
        "inputs, floats in [0, 1]": {"inputs": (patches / 255).tolist()},
        "inputs, named base64 images": {"inputs": {"image": b64}},
        "instances": {"instances": patches.tolist()},
        "dataframe_split, pixel columns": {"dataframe_split": json.loads(
            flat.to_json(orient="split", index=False))},
        "dataframe_split, a base64 column": {"dataframe_split": {
            "columns": ["image"], "data": [[b] for b in b64]}},
        "dataframe_records, base64": {"dataframe_records": [{"image": b} for b in b64]},
        "dataframe_records, nested pixels": {"dataframe_records": [{"pixels": p.tolist()}
                                                                   for p in patches]},
    }
    bodies = {form: (json.dumps(body).encode(), "application/json") for form, body in forms.items()}
    bodies["csv, pixel columns"] = (flat.to_csv(index=False).encode(), "text/csv")
    parquet = io.BytesIO()
    pd.DataFrame({"image": b64}).to_parquet(parquet)
    bodies["parquet, a base64 column"] = (parquet.getvalue(), "application/vnd.apache.parquet")
    bodies["json with params and a charset"] = (json.dumps(
        {"inputs": patches.tolist(), "params": {}}).encode(), "application/json; charset=utf-8")
    return bodies


def scored(url: str, body: bytes, content_type: str) -> pd.DataFrame:
    status, answer = request(f"{url}/invocations", body, content_type)
    assert status == 200, answer
    return pd.DataFrame(answer["predictions"])


def test_mlflows_own_client_drives_the_serve_app(service, files):
    url, _ = service
    client = ScoringServerClient("127.0.0.1", int(url.rsplit(":", 1)[1]))
    client.wait_server_ready(timeout=30)
    assert client.get_version() == mlflow.__version__
    for path in ("/ping", "/health"):
        with urllib.request.urlopen(f"{url}{path}", timeout=10) as response:
            assert response.status == 200
    patches = stored_patches(files)
    expected = champion_frame(patches)
    for data in (patches, pd.DataFrame(patches.reshape(len(patches), -1))):
        got = client.invoke(data).get_predictions()
        assert list(got.columns) == list(expected.columns)
        np.testing.assert_allclose(got.to_numpy(float), expected.to_numpy(float), atol=1e-5)


def test_every_body_form_of_mlflows_protocol_scores_like_the_pyfunc(service, files):
    url, _ = service
    expected = champion_frame(stored_patches(files[2:4]))
    for form, (body, content_type) in invocation_bodies(files[2:4]).items():
        got = scored(url, body, content_type)
        assert list(got.columns) == list(expected.columns), form
        np.testing.assert_allclose(got.to_numpy(float), expected.to_numpy(float), atol=1e-5,
                                   err_msg=form)


def test_mlflow_models_serve_answers_every_form_the_same(service, mlflow_server, files):
    url, _ = service
    for form, (body, content_type) in invocation_bodies(files[2:4]).items():
        ours, theirs = scored(url, body, content_type), scored(mlflow_server, body, content_type)
        assert list(ours.columns) == list(theirs.columns), form
        np.testing.assert_allclose(ours.to_numpy(float), theirs.to_numpy(float), atol=1e-5,
                                   err_msg=form)


def malformed_invocations(files: list[Path]) -> list[tuple[bytes, str, int, str]]:
    """Returns (body, content type, status, words of the message) of refused requests."""
    zeros = np.zeros((60, 60), int).tolist()
    def body(data) -> bytes:
        return json.dumps(data).encode()
    return [
        (b"{not json", "application/json", 400, "not valid JSON"),
        (body([zeros]), "application/json", 400, "exactly one of the keys"),
        (body({"images": [zeros]}), "application/json", 400, "exactly one of the keys"),
        (body({"inputs": [zeros], "instances": [zeros]}), "application/json", 400, "exactly one"),
        (body({"inputs": [[1, 2]]}), "application/json", 400, "expected patches shaped"),
        (body({"inputs": []}), "application/json", 400, "expected patches shaped"),
        (body({"inputs": [np.full((60, 60), 300).tolist()]}), "application/json", 400, "8-bit"),
        (body({"inputs": [np.full((60, 60), 2.5).tolist()]}), "application/json", 400, "[0, 1]"),
        (body({"dataframe_split": {"columns": ["image"], "data": [["@@"]]}}), "application/json",
         400, "not valid base64"),
        (body({"dataframe_records": [{"a": "x", "b": "y"}]}), "application/json", 400,
         "one column of images"),
        (body({"dataframe_split": {"columns": ["0"], "data": [[1]]}}), "application/json", 400,
         "3600 columns"),
        (b"a,b\n1,2\n", "text/csv", 400, "3600 columns"),
        (body({"inputs": [zeros]}), "text/plain", 415, "content type"),
        (body({"dataframe_split": {"columns": ["0"], "data": [[1]]}}),
         "application/json; format=pandas-split", 415, "unrecognized content type parameters"),
        (body({"inputs": [zeros] * 9}), "application/json", 413, "limit is 8"),
    ]


def test_malformed_invocations_get_mlflows_error_shape_and_status(service, mlflow_server, files):
    url, _ = service
    for data, content_type, status, words in malformed_invocations(files):
        got, answer = request(f"{url}/invocations", data, content_type)
        assert (got, words in answer.get("message", "")) == (status, True), (words, answer)
        assert answer["error_code"] in ("BAD_REQUEST", "INVALID_PARAMETER_VALUE",
                                        "RESOURCE_LIMIT_EXCEEDED")
        if status != 413:  # mlflow models serve has no image limit
            assert request(f"{mlflow_server}/invocations", data, content_type)[0] == status, words
    with urllib.request.urlopen(f"{url}/ping", timeout=10) as response:
        assert response.status == 200


def test_200_requests_from_16_concurrent_clients_all_succeed(service, files):
    url, _ = service
    payload = json.dumps({"images": [base64.b64encode(files[-1].read_bytes()).decode()]}).encode()
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda _: request(f"{url}/predict", payload)[0], range(200)))
    assert statuses == [200] * 200


def bad_bodies(files: list[Path]) -> list[tuple[bytes, str, int, str]]:
    png = files[0].read_bytes()
    b64 = base64.b64encode(png).decode()
    zeros = np.zeros((60, 60), int).tolist()
    return [
        (b"{not json", "application/json", 400, "not valid JSON"),
        (json.dumps({"images": [b64], "model": "x"}).encode(), "application/json", 400, "unknown keys"),
        (json.dumps({"images": [base64.b64encode(b"text").decode()]}).encode(), "application/json", 400, "not a PNG"),
        (json.dumps({"images": [base64.b64encode(png[:80]).decode()]}).encode(), "application/json", 400, "cannot read image"),
        (json.dumps({"inputs": [np.zeros((40, 40), int).tolist()], "dtype": "uint8"}).encode(), "application/json", 422, "expected patches shaped"),
        (json.dumps({"inputs": [zeros]}).encode(), "application/json", 422, "must say their bit depth"),
        (json.dumps({"inputs": [zeros], "bit_depth": 40}).encode(), "application/json", 422, "integer 1..16"),
        (json.dumps({"inputs": [np.full((60, 60), 300).tolist()], "bit_depth": 8}).encode(), "application/json", 422, "[0, 255] (8-bit)"),
        (json.dumps({"inputs": [[["x"] * 60] * 60]}).encode(), "application/json", 422, "numbers only"),
        (json.dumps({"inputs": [zeros]}).replace("0", "NaN", 1).encode(), "application/json", 422, "NaN"),
        (json.dumps({"inputs": [np.full((60, 60), 2.5).tolist()]}).encode(), "application/json", 422, "[0, 1]"),
        (json.dumps({"images": []}).encode(), "application/json", 400, "non-empty list"),
        (json.dumps({"inputs": [zeros] * 9, "bit_depth": 8}).encode(), "application/json", 413, "limit is 8"),
        (json.dumps({"images": ["A" * 300_000]}).encode(), "application/json", 413, "exceeds the limit"),
    ]


def test_bad_input_gets_a_4xx_json_error_and_the_service_keeps_answering(service, files):
    url, _ = service
    for data, content_type, status, message in bad_bodies(files):
        got_status, body = request(f"{url}/predict", data, content_type)
        assert (got_status, message in body.get("error", "")) == (status, True), (message, body)
    status, body = request(f"{url}/nowhere")
    assert status == 404 and "error" in body
    status, _ = request(f"{url}/healthz")
    assert status == 200
    with pytest.raises(ServiceError, match="HTTP 400"):
        score_files([Path(__file__)], url)


def test_the_replica_measured_how_to_call_its_experts(service):
    # which way wins depends on the host (threads need an idle core; one graph saves
    # each expert's dispatch): whichever, measured at start-up
    times = r"[\d.]+ / [\d.]+ / [\d.]+ ms"
    assert re.fullmatch(rf"(one after the other|at once on threads|as one graph) \(measured "
                        rf"sequential / concurrent / graph: 1 image {times}, 32 images {times}\)",
                        replica_status()["expert_calls"])


def test_model_endpoint_and_openapi_docs(service):
    url, _ = service
    status, info = request(f"{url}/model")
    assert status == 200 and info["name"] == NAME and info["alias"] == "champion"
    assert "not for diagnosis" in info["model_card"] and "holdout_learned_auc" in info["metrics"]
    assert info["image_size"] == [60, 60] and len(info["weights"]) == 2
    with urllib.request.urlopen(f"{url}/openapi.json", timeout=10) as response:
        assert "/predict" in json.loads(response.read())["paths"]


def test_explain_returns_a_heatmap_and_an_overlay_for_both_methods(service, files):
    url, _ = service
    body = json.dumps({"images": [base64.b64encode(files[-1].read_bytes()).decode()]}).encode()
    probability = request(f"{url}/predict", body)[1]["predictions"][0]["probability"]
    for method in ("gradcam", "shap"):
        status, answer = request(f"{url}/explain?method={method}", body)
        assert status == 200, answer
        heatmap = np.array(answer["heatmap"])
        assert heatmap.shape == (60, 60) and np.all(np.isfinite(heatmap))
        assert answer["probability"] == pytest.approx(probability, abs=1e-5)
        overlay = Image.open(io.BytesIO(base64.b64decode(answer["overlay_png"])))
        assert overlay.size == (240, 240) and answer["model"]["name"] == NAME
    # Deep SHAP of the weighted ensemble adds up to its weighted probability (before the
    # ensemble's calibration, a monotone map of it) minus the base value.
    assert heatmap.sum() == pytest.approx(answer["explained_probability"]
                                          - answer["expected_value"], abs=5e-3)
    status, answer = request(f"{url}/explain?method=gradcam&expert=0", body)
    assert status == 200 and answer["experts"] == [0] and answer["label"] is None


def test_explain_refuses_bad_requests_with_the_reason(service, files):
    url, _ = service
    one = json.dumps({"images": [base64.b64encode(files[0].read_bytes()).decode()]}).encode()
    two = json.dumps({"inputs": [np.zeros((60, 60), int).tolist()] * 2, "bit_depth": 8}).encode()
    for path, data, status, message in [
            ("/explain?method=lime", one, 422, "method must be"),
            ("/explain", two, 422, "exactly one image"),
            ("/explain?method=shap&expert=9", one, 422, "expert must lie in 0..1"),
            ("/explain?expert=x", one, 422, "expert"),
            ("/explain", b"{not json", 400, "not valid JSON")]:
        got, body = request(url + path, data)
        assert (got, message in json.dumps(body)) == (status, True), (path, body)


def test_an_8_bit_and_a_16_bit_copy_of_a_patch_score_the_same_over_http(service, files):
    """Decoded images are scaled one by one: stacking an 8-bit with a 16-bit image must not
    turn the 8-bit one dark (it scored 0.017 instead of 0.999 before)."""
    url, _ = service
    eight = files[-1].read_bytes()
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(Image.open(files[-1]), np.uint16) * 257).save(buffer, "PNG")
    sixteen = buffer.getvalue()
    alone = request(f"{url}/predict", json.dumps({"images": [base64.b64encode(eight).decode()]})
                    .encode())[1]["predictions"][0]["probability"]
    mixed = json.dumps({"images": [base64.b64encode(d).decode() for d in (eight, sixteen)]})
    upload = uuid.uuid4().hex
    parts = b"".join(f"--{upload}\r\nContent-Disposition: form-data; name=\"file\"; filename="
                     f"\"{n}.png\"\r\nContent-Type: image/png\r\n\r\n".encode() + d + b"\r\n"
                     for n, d in (("a", eight), ("b", sixteen))) + f"--{upload}--\r\n".encode()
    for status, body in (request(f"{url}/predict", mixed.encode()),
                         request(f"{url}/predict", parts, f"multipart/form-data; boundary={upload}")):
        assert status == 200, body
        got = [p["probability"] for p in body["predictions"]]
        assert got == pytest.approx([alone, alone], abs=1e-5)


def post_chunked(url: str, chunk: bytes, n_chunks: int) -> tuple[int, str]:
    """POSTs a chunked body (no Content-Length); returns the status and body text, or
    (0, error) if the server closed the connection before answering."""
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=60)
    try:
        connection.request("POST", "/predict", body=(chunk for _ in range(n_chunks)),
                           headers={"Content-Type": "application/json"}, encode_chunked=True)
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused mid-body: the answer may still be waiting to be read
    try:
        response = connection.getresponse()
        return response.status, response.read().decode(errors="replace")
    except (ConnectionError, http.client.HTTPException) as err:
        return 0, repr(err)
    finally:
        connection.close()


def test_a_chunked_body_over_the_limit_is_refused_with_413(service, files):
    url, settings = service
    status, text = post_chunked(url, b" " * (1 << 20), 20)  # 20 MiB, no Content-Length
    assert status == 413 and "exceeds the limit" in text, text
    assert request(f"{url}/healthz")[0] == 200
    payload = json.dumps({"images": [base64.b64encode(files[0].read_bytes()).decode()]}).encode()
    status, text = post_chunked(url, payload, 1)  # a small chunked body is scored
    assert status == 200 and json.loads(text)["predictions"], text


def fuzz_bodies(png: bytes, n: int, seed: int = 0) -> list[tuple[bytes, str]]:
    """Returns `n` malformed bodies: random bytes, truncations, odd JSON shapes, forged
    image headers and deep nesting, each with the content type it is sent with."""
    rng = np.random.default_rng(seed)
    b64 = base64.b64encode(png).decode()
    forged = bytearray(png)
    forged[16:24] = (100_000).to_bytes(4, "big") * 2  # IHDR: 10^10 pixels
    shapes = [{"images": [b64[:k]]} for k in (1, 7, 100)] + [
        {"inputs": [[[float("inf")]]]}, {"inputs": 3}, {"inputs": [[[[[[0]]]]]]},
        {"images": [None]}, {"images": {"a": b64}}, {"inputs": [[[1e308] * 60] * 60]},
        {"inputs": [[["0"] * 60] * 60]}, {"images": [base64.b64encode(bytes(forged)).decode()]},
        {"inputs": [[[-1] * 60] * 60]}, {"inputs": [[[2 ** 70] * 60] * 60]}, [], "x", None]
    bodies = []
    for i in range(n):
        kind = i % 5
        if kind == 0:
            bodies.append((rng.bytes(int(rng.integers(0, 2000))), "application/json"))
        elif kind == 1:
            whole = json.dumps({"images": [b64]}).encode()
            bodies.append((whole[:int(rng.integers(0, len(whole)))], "application/json"))
        elif kind == 2:
            bodies.append((json.dumps(shapes[i % len(shapes)]).encode(), "application/json"))
        elif kind == 3:
            depth = int(rng.integers(1, 200_000))
            bodies.append((b"[" * depth + b"]" * depth, "application/json"))
        else:
            bodies.append((rng.bytes(int(rng.integers(0, 2000))),
                           "multipart/form-data; boundary=xyz"))
    return bodies


def test_a_few_hundred_malformed_bodies_never_get_a_5xx(service, files):
    url, _ = service
    deadline = time.monotonic() + 240
    for body, content_type in fuzz_bodies(files[0].read_bytes(), 300):
        for path in ("/predict", "/explain", "/invocations"):
            status, answer = request(f"{url}{path}", body, content_type)
            assert 400 <= status < 500, (path, body[:80], status, answer)
            assert ("message" if path == "/invocations" else "error") in answer, answer
        assert time.monotonic() < deadline, "the fuzz run is bounded in time"
    assert request(f"{url}/healthz")[0] == 200
    ok = json.dumps({"images": [base64.b64encode(files[0].read_bytes()).decode()]}).encode()
    assert request(f"{url}/predict", ok)[0] == 200


def test_a_single_request_larger_than_a_batch_is_scored_in_full(service, files):
    url, settings = service
    deploy(settings.model_copy(update={"max_batch_size": 2}), reload_token=0)
    try:
        images = [base64.b64encode(f.read_bytes()).decode() for f in files]
        status, body = request(f"{url}/predict", json.dumps({"images": images}).encode())
        assert status == 200 and len(body["predictions"]) == len(files), body
    finally:
        deploy(settings)


def test_a_redeploy_with_another_model_uri_reconfigures_the_replica_on_its_port(service):
    """With direct ingress the replica holds the port: another URI (or other settings) must
    reach it in place, not through a new replica that could not bind the port."""
    url, settings = service
    version = request(f"{url}/model")[1]["version"]
    pinned = f"models:/{NAME}/{version}"
    deploy(settings.model_copy(update={"model_uri": pinned, "max_batch_size": 4}))
    try:
        status, info = request(f"{url}/model")
        assert status == 200 and info["model_uri"] == pinned and info["version"] == version
    finally:
        deploy(settings)
    assert request(f"{url}/model")[1]["model_uri"] == settings.model_uri


def test_reload_after_the_alias_moves_serves_the_new_version_without_failed_requests(
        service, files):
    url, settings = service
    before = request(f"{url}/model")[1]
    # The register step moves the alias: the same search again ties the champion's AUC.
    registration = register_search(load_experiment(ROOT / SMOKE),
                                   before["search_run"])
    assert registration.alias == "champion" and registration.version != before["version"]
    payload = json.dumps({"images": [base64.b64encode(files[0].read_bytes()).decode()]}).encode()
    statuses, stop = [], threading.Event()

    def keep_asking() -> None:
        while not stop.is_set():
            statuses.append(request(f"{url}/predict", payload)[0])

    workers = [threading.Thread(target=keep_asking) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        deploy(settings, reload_token=1)
    finally:
        stop.set()
        for worker in workers:
            worker.join()
    assert statuses and set(statuses) == {200}
    assert request(f"{url}/model")[1]["version"] == registration.version
    status, body = request(f"{url}/predict", payload)
    assert status == 200 and body["model"]["version"] == registration.version


def test_a_failed_reload_keeps_serving_the_model_it_had(service, files, tmp_path):
    """The alias moves to a broken version; a reload (SIGHUP's path) reports the error and
    the service stays on the version it had."""
    url, settings = service
    client = mlflow.MlflowClient()
    before = request(f"{url}/model")[1]["version"]
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "MLmodel").write_text("not: [a model")
    broken = client.create_model_version(NAME, str(tmp_path / "broken"))
    client.set_registered_model_alias(NAME, "champion", broken.version)
    try:
        line = reload(settings, int(time.time()))
        assert "failed, still serving version " + before in line, line
        status, health = request(f"{url}/healthz")
        assert status == 200 and health["version"] == before
        info = request(f"{url}/model")[1]
        assert info["version"] == before and "pid" not in info
        payload = json.dumps({"images": [base64.b64encode(files[0].read_bytes()).decode()]})
        status, body = request(f"{url}/predict", payload.encode())
        assert status == 200 and body["model"]["version"] == before
    finally:
        client.set_registered_model_alias(NAME, "champion", before)
    assert reload(settings, int(time.time()) + 1) == (
        f"reloaded {settings.model_uri}: serving version {before}")
    assert request(f"{url}/model")[1]["reload_error"] is None


def test_an_in_place_reconfigure_that_fails_keeps_the_model_and_says_why(service):
    """`serve deploy` of a changed user_config reconfigures replicas in place; a URI that
    does not load there must leave the replica on its model, with the error in /model."""
    _, settings = service
    # the class as written, beneath the ingress wrapper Serve puts around it
    plain = next(c for c in PatchScorer.func_or_class.__mro__[1:] if c.__module__ == "serve.app")
    scorer = plain(settings.model_dump())
    scorer.reconfigure({"reload_token": 0})
    served = scorer.model.info["version"]
    scorer.reconfigure({"reload_token": 1, "model_uri": f"models:/{NAME}/999"})
    assert scorer.model.info["version"] == served
    assert scorer.reload_error.startswith(f"reload of models:/{NAME}/999 failed, still serving "
                                          f"version {served}")
    scorer.reconfigure({"reload_token": 2})
    assert scorer.reload_error is None and scorer.model.info["version"] == served


def explanation_slot_free(url: str, body: bytes, timeout: float = 300) -> int:
    """Returns the status of the first Grad-CAM `/explain` not refused with 503: an earlier
    explanation that timed out runs on at the lowest priority, longer on a busy host."""
    deadline = time.monotonic() + timeout
    while (status := request(f"{url}/explain?method=gradcam", body)[0]) == 503:
        assert time.monotonic() < deadline, f"the explanation slot stayed taken {timeout} s"
        time.sleep(0.5)
    return status


def test_explain_past_its_deadline_answers_504_and_the_service_stays_up(service, files):
    url, settings = service
    deploy(settings.model_copy(update={"explain_timeout_s": 0.001}), reload_token=3)
    body = json.dumps({"images": [base64.b64encode(files[0].read_bytes()).decode()]}).encode()
    status, answer = request(f"{url}/explain?method=shap", body)
    assert status == 504 and "longer than 0.001 s" in answer["error"]
    assert request(f"{url}/predict", body)[0] == 200


def test_an_explanation_past_its_deadline_keeps_its_slot_while_scoring_goes_on(service, files):
    """The SHAP work of a 504 goes on in the explanation pool: the replica takes no other
    explanation until it ends (503), and scoring answers meanwhile."""
    url, settings = service
    body = json.dumps({"images": [base64.b64encode(files[0].read_bytes()).decode()]}).encode()
    explanation_slot_free(url, body)
    deploy(settings.model_copy(update={"explain_timeout_s": 0.001}), reload_token=4)
    try:
        assert request(f"{url}/explain?method=shap", body)[0] == 504
        status, answer = request(f"{url}/explain?method=gradcam", body)
        assert status == 503 and "already running" in answer["error"]
        assert [request(f"{url}/predict", body)[0] for _ in range(10)] == [200] * 10
        assert request(f"{url}/invocations", body.replace(b"images", b"inputs"))[0] == 200
    finally:
        deploy(settings)
    assert explanation_slot_free(url, body) == 200  # the slot comes back


def test_the_explanation_process_is_stopped_while_scoring_runs(service, files):
    """SHAP's CPU must not be taken from scoring: explanations run in a child process of
    the replica, stopped from a scoring request's arrival to the last one's answer."""
    url, settings = service
    deploy(settings)  # the default deadline again, after the tests above shortened it
    body = json.dumps({"images": [base64.b64encode(files[0].read_bytes()).decode()]}).encode()
    assert explanation_slot_free(url, body) == 200
    replicas = [p for p in psutil.process_iter(["cmdline"])
                if "ServeReplica" in " ".join(p.info["cmdline"] or [])]
    children = [child for replica in replicas for child in replica.children()
                if "spawn_main" in " ".join(child.cmdline())]  # not the resource tracker
    assert len(children) == 1, [c.cmdline() for c in children]
    child = children[0]
    many = json.dumps({"inputs": [[[0.5] * 60] * 60] * 64}).encode()
    seen, stop = set(), threading.Event()

    def load() -> None:
        while not stop.is_set():
            request(f"{url}/predict", many)

    with ThreadPoolExecutor(3) as pool:
        for _ in range(3):
            pool.submit(load)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and psutil.STATUS_STOPPED not in seen:
            seen.add(child.status())
        stop.set()
    assert psutil.STATUS_STOPPED in seen, seen
    deadline = time.monotonic() + 30
    while child.status() == psutil.STATUS_STOPPED:  # continued once no request is in flight
        assert time.monotonic() < deadline, "the explanation process was never continued"
        time.sleep(0.1)


def test_overload_is_answered_with_503_at_once_not_queued(service, files):
    url, settings = service
    deploy(settings.model_copy(update={"max_ongoing_requests": 1, "max_queued_requests": 1,
                                       "max_batch_size": 1}), reload_token=2)
    payload = json.dumps({"images": [base64.b64encode(f.read_bytes()).decode()
                                     for f in files]}).encode()

    def timed(_) -> tuple[int, float]:
        start = time.monotonic()
        return request(f"{url}/predict", payload)[0], time.monotonic() - start

    with ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(timed, range(24)))
    statuses = [status for status, _ in answers]
    assert set(statuses) <= {200, 503} and statuses.count(503) > 0 and 200 in statuses
    refused = [seconds for status, seconds in answers if status == 503]
    assert max(refused) < max(seconds for status, seconds in answers if status == 200)
