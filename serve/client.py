"""A small client for the scoring service (standard library only).

    python -m serve.client patch1.png patch2.pgm --url http://127.0.0.1:8000

    from serve.client import score_files
    for row in score_files(["patch1.png"]):
        print(row["probability"], row["label"])
"""
from __future__ import annotations

import argparse
import base64
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path

DEFAULT_URL = "http://127.0.0.1:8000"


class ServiceError(Exception):
    """The service answered with an error: HTTP status and its message."""


def score_files(paths: list[str | Path], url: str = DEFAULT_URL, timeout: float = 30) -> list[dict]:
    """Returns one {"probability", "label", "experts"} per file, in order."""
    images = [base64.b64encode(Path(p).read_bytes()).decode("ascii") for p in paths]
    return post_json(f"{url}/predict", {"images": images}, timeout)["predictions"]


def post_json(url: str, payload: dict, timeout: float = 30) -> dict:
    """Returns the decoded JSON answer; raises ServiceError with the service's message."""
    request = urllib.request.Request(url, json.dumps(payload).encode(),
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as err:
        body = err.read().decode(errors="replace")
        try:
            message = json.loads(body).get("error", body)
        except json.JSONDecodeError:
            message = body
        raise ServiceError(f"HTTP {err.code}: {message}") from err


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Score image files with the REST service.")
    parser.add_argument("files", nargs="+")
    parser.add_argument("--url", default=DEFAULT_URL)
    args = parser.parse_args(argv)
    try:
        rows = score_files(args.files, args.url)
    except (ServiceError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for path, row in zip(args.files, rows):
        print(f"{path}\t{row['probability']:.4f}\t{row['label']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
