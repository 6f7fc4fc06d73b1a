"""Regenerates the README's screenshots of the MLflow UI from a real quick run.

    python docs/screenshots.py                      # a fresh quick pipeline in a temp store
    python docs/screenshots.py --store /path/to/folder-with-mlflow.db

Needs headless Chromium (Debian: `apt-get install chromium`). Starts `mlflow server` on
127.0.0.1 (a free port) over the store, then writes into docs/screenshots/:

- search_run.png: the search run's overview (description with the CV table, datasets);
- fold_comparison.png: the five fold runs compared side by side (parallel coordinates
  of the best configs against the test AUC);
- model_version.png: the registered version with its model card.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import mlflow

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from serve.ports import free_port  # noqa: E402

OUT = ROOT / "docs" / "screenshots"
QUICK = "experiments/microcal_quick.yaml"


def quick_store(folder: Path) -> Path:
    """Runs the quick pipeline (`mlflow run .`, quick config) into `folder`; returns it."""
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_RUN_ID"}
    env.update(MLFLOW_TRACKING_URI=f"sqlite:///{folder / 'mlflow.db'}",
               MAMMO_RAY_STORAGE=str(folder / "ray_results"))
    subprocess.run([str(Path(sys.executable).parent / "mlflow"), "run", ".", "--env-manager",
                    "local", "-P", f"config={QUICK}"], cwd=ROOT, env=env, check=True)
    return folder


def start_ui(store: Path, port: int) -> subprocess.Popen:
    """Starts `mlflow server` on 127.0.0.1:`port`; returns it once /health answers."""
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlflow"), "server", "--backend-store-uri",
         f"sqlite:///{store / 'mlflow.db'}", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return server
        except OSError:
            time.sleep(1)
    server.kill()
    raise RuntimeError("mlflow server did not answer within 120 s")


def pages(store: Path, base: str) -> dict[str, str]:
    """Returns {file name: UI address} of the latest search, its folds and its model."""
    uri = f"sqlite:///{store / 'mlflow.db'}"
    client = mlflow.MlflowClient(uri, registry_uri=uri)
    runs = [r for e in client.search_experiments() for r in client.search_runs(
        [e.experiment_id], order_by=["attributes.start_time DESC"])]
    search = next(r for r in runs if r.data.tags.get("mammo.kind") == "search")
    folds = [r.info.run_id for r in runs if r.data.tags.get("mlflow.parentRunId")
             == search.info.run_id and r.data.tags.get("mammo.kind") == "fold"]
    experiment = search.info.experiment_id
    version = next(r for r in runs if r.data.tags.get("mammo.kind") == "register"
                   and r.data.tags.get("mammo.search_run") == search.info.run_id)
    name, number = version.data.params["model_name"], version.data.tags["mammo.model_version"]
    quote = urllib.parse.quote
    return {"search_run.png": f"{base}/#/experiments/{experiment}/runs/{search.info.run_id}",
            "fold_comparison.png": f"{base}/#/compare-runs?runs={quote(json.dumps(folds))}"
                                   f"&experiments={quote(json.dumps([experiment]))}",
            "model_version.png": f"{base}/#/models/{name}/versions/{number}"}


def screenshot(chromium: str, url: str, target: Path) -> None:
    subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1400,1600", "--virtual-time-budget=20000",
                    f"--screenshot={target}", url], check=True, capture_output=True, timeout=120)
    print(f"wrote {target.relative_to(ROOT)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, help="folder with mlflow.db (default: a new "
                                                   "quick pipeline in a temporary folder)")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("error: no chromium on PATH (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory() as folder:
        store = args.store.resolve() if args.store else quick_store(Path(folder))
        port = free_port()
        server = start_ui(store, port)
        try:
            OUT.mkdir(parents=True, exist_ok=True)
            for name, url in pages(store, f"http://127.0.0.1:{port}").items():
                screenshot(chromium, url, OUT / name)
        finally:
            os.killpg(server.pid, 15)
            server.wait(timeout=60)


if __name__ == "__main__":
    main()
