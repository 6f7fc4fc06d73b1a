"""Design checks on one grouped split: BatchNorm momentum and the wavelet filter.

    python benchmarks/variants_bench.py

Runs the real `train` entry point three times on the same grouped split (seed 0) with the
default config, changing one thing each time: Keras' default BatchNorm momentum 0.99, the
project's 0.9, and 0.9 with the wavelet filter off. Each run goes to its own SQLite store
(benchmarks/results/variants.db); prints test AUC, validation AUC and epochs as markdown.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import mlflow
import yaml

ROOT = Path(__file__).resolve().parents[1]
STORE = ROOT / "benchmarks" / "results" / "variants.db"
VARIANTS = {
    "BatchNorm momentum 0.99 (Keras default)": {"model": {"batchnorm_momentum": 0.99}},
    "BatchNorm momentum 0.9 (project default)": {},
    "momentum 0.9, wavelet filter off": {"preprocessing": {"wavelet": {"enabled": False}}},
}


def merged(base: dict, change: dict) -> dict:
    out = dict(base)
    for key, value in change.items():
        out[key] = merged(base.get(key, {}), value) if isinstance(value, dict) else value
    return out


def run_variant(name: str, change: dict, base: dict) -> dict[str, float]:
    """Runs `train` with the changed config; returns the run's metrics."""
    config = merged(base, change) | {"name": "variant"}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as handle:
        yaml.safe_dump(config, handle)
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{STORE}")
    env.pop("MLFLOW_RUN_ID", None)
    out = subprocess.run([sys.executable, "-m", "tune.train", "--config", handle.name],
                         cwd=ROOT, env=env, capture_output=True, text=True)
    os.unlink(handle.name)
    if out.returncode != 0:
        raise SystemExit(f"{name}: train failed\n{out.stderr[-2000:]}")
    run_id = next(line.split()[1] for line in out.stdout.splitlines() if line.startswith("run "))
    return mlflow.MlflowClient(f"sqlite:///{STORE}").get_run(run_id).data.metrics


def main() -> None:
    STORE.parent.mkdir(parents=True, exist_ok=True)
    base = yaml.safe_load((ROOT / "experiments" / "microcal.yaml").read_text())
    print("| variant | test AUC | val AUC (final model) | epochs trained |")
    print("|---|---:|---:|---:|")
    for name, change in VARIANTS.items():
        m = run_variant(name, change, base)
        print(f"| {name} | {m['test_auc']:.3f} | {m['val_auc']:.3f} | "
              f"{m['epochs_trained']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
