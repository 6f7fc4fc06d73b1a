"""MLflow's scoring protocol on the Serve app: what `mlflow models serve` clients send.

    POST /invocations   application/json: {"inputs" | "instances" | "dataframe_split" |
                        "dataframe_records": ...}, or text/csv, or Parquet
    GET  /ping, /health, /version

Bodies are parsed by MLflow's own functions (`infer_and_parse_data`, the CSV and Parquet
readers), so a request means here what it means to `mlflow models serve`; the parsed input
is then read as the pyfunc reads it (`mammo_core.inputs`) and scored by the app's batched
method, and the answer is MLflow's `{"predictions": [row, ...]}` (the pyfunc's table, one
record per image). Errors take MLflow's shape `{"error_code", "message"}`.
"""
from __future__ import annotations

import io
import json

import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import scoring_server
from starlette.responses import Response

from mammo_core.images import decode_image
from mammo_core.inputs import Decoder, raw_patches
from serve.payload import BadRequest, PixelBudget, check_count, guarded, json_body
from serve.settings import ServeSettings

JSON, CSV, PARQUET = (scoring_server.CONTENT_TYPE_JSON, scoring_server.CONTENT_TYPE_CSV,
                      scoring_server.CONTENT_TYPE_PARQUET)
FORMATS = sorted(scoring_server.SUPPORTED_FORMATS)
TENSOR_KEYS = (scoring_server.INPUTS, scoring_server.INSTANCES)


def error_response(status: int, message: str, code: str = "BAD_REQUEST") -> Response:
    """Returns MLflow's error body, {"error_code": ..., "message": ...}, with `status`."""
    return Response(json.dumps({"error_code": code, "message": message}), status_code=status,
                    media_type="application/json")


def predictions_response(columns: dict[str, np.ndarray]) -> Response:
    """Returns `{"predictions": [{column: value}, ...]}`, what `mlflow models serve` writes
    for the pyfunc's table (records), built without the table: 0.02 ms instead of 0.5 ms
    a request on the event loop."""
    names, values = list(columns), [columns[name].tolist() for name in columns]
    rows = [dict(zip(names, row)) for row in zip(*values)]
    return Response(json.dumps({"predictions": rows}), media_type="application/json")


def model_input(body: bytes, content_type: str | None, settings: ServeSettings):
    """Returns the body parsed as MLflow's scoring server parses it (an array, a DataFrame
    or a dict of arrays). Raises BadRequest: 415 for a content type MLflow does not take,
    400 for a body that does not parse, 413 for more images than the limit."""
    mime, *pairs = [part.strip() for part in (content_type or "").split(";")]
    parameters = dict(pair.partition("=")[::2] for pair in pairs if pair)
    charset, unknown = parameters.pop("charset", "utf-8"), sorted(parameters)
    if charset.lower() != "utf-8":
        raise BadRequest(415, f"only UTF-8 bodies are taken, got charset {charset!r}")
    if unknown:  # MLflow 1.x's `format=pandas-split` and the like: gone since MLflow 2.0
        raise BadRequest(415, f"unrecognized content type parameters {unknown}; send the "
                              f"format as a JSON key, one of {FORMATS}")
    mime = mime.lower()
    readers = {JSON: parse_json, CSV: parse_csv, PARQUET: parse_parquet}
    if mime not in readers:
        raise BadRequest(415, f"content type {content_type!r} is not one of {list(readers)}")
    try:
        parsed = guarded(readers[mime], body)
    except MlflowException as err:
        raise BadRequest(400, err.message) from err
    check_count(image_count(parsed), settings)
    return parsed


def image_count(parsed) -> int:
    """Returns how many images (rows) a parsed input holds."""
    if isinstance(parsed, dict):
        return max((len(v) for v in parsed.values() if np.ndim(v)), default=0)
    return len(parsed) if np.ndim(parsed) else 1


def parse_csv(body: bytes):
    """Returns a CSV body as MLflow's server reads it (a header row, then a row per image)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadRequest(400, f"body is not UTF-8: {err}") from err
    return scoring_server.parse_csv_input(io.StringIO(text))


def parse_parquet(body: bytes):
    return scoring_server.parse_parquet_input(io.BytesIO(body))


def parse_json(body: bytes):
    """Returns a JSON body's input: exactly one of MLflow's format keys (`params` is taken
    and ignored, as MLflow does for a model without a params schema)."""
    data = json_body(body)
    if not isinstance(data, dict):
        raise BadRequest(400, f"expected a JSON object with exactly one of the keys {FORMATS}, "
                              f"got a {type(data).__name__}")
    unknown = sorted(set(data) - set(FORMATS) - {"params"})
    if unknown or len(set(data) & set(FORMATS)) != 1:
        raise BadRequest(400, f"expected a JSON object with exactly one of the keys {FORMATS} "
                              f"(and optionally \"params\"), got keys {sorted(data)}")
    key = next(k for k in FORMATS if k in data)
    value = data[key]
    if key in TENSOR_KEYS and isinstance(value, list) and not any(isinstance(v, dict)
                                                                   for v in value):
        # What MLflow makes of a list for a model without a schema (`convert_data_type`:
        # np.array), without its deep copy of the body first: 0.5 ms a 60x60 patch.
        return np.array(value)
    return scoring_server.infer_and_parse_data({key: value})


def patches(parsed, info: dict, decode: Decoder) -> np.ndarray:
    """Returns a parsed input as one raw array for the served model, read as the pyfunc
    reads it. The app's own `mammo_core` does the reading: a model registered before
    tables were accepted ships an older one that takes arrays only."""
    size = tuple(info["image_size"])
    return raw_patches(parsed, (2, *size) if info["pairs"] else size, decode)


def decoder(settings: ServeSettings, size: tuple[int, int], depth: int) -> Decoder:
    """Returns how the service reads one request's image bytes in a table: the formats,
    pixel bounds (per image and per request) and size rule of its settings, 16-bit
    containers at least at the training depth."""
    budget = PixelBudget(settings)

    def decode(data: bytes, name: str) -> np.ndarray:
        budget.take(data, name)
        return decode_image(data, size, name, resize=settings.wrong_size == "resize",
                            formats=settings.image_formats,
                            max_pixels=settings.max_image_pixels, depth=depth)
    return decode


def refusal(err: Exception) -> Response:
    """Returns MLflow's error shape for a refused request: 400 INVALID_PARAMETER_VALUE for
    input that is not patches this model scores (what the pyfunc raises under `mlflow
    models serve`), else the request's own status (400, 413, 415) with BAD_REQUEST, or
    RESOURCE_LIMIT_EXCEEDED for a body or batch over the limits."""
    if isinstance(err, BadRequest):
        code = "RESOURCE_LIMIT_EXCEEDED" if err.status == 413 else "BAD_REQUEST"
        return error_response(err.status, err.message, code)
    return error_response(400, str(err), "INVALID_PARAMETER_VALUE")
