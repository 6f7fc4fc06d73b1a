"""Wavelet-coefficient classic classifiers vs the CNN search, on the search's own folds.

    python benchmarks/baselines_bench.py                      # latest default search
    python benchmarks/baselines_bench.py --search-run <id>
    python benchmarks/baselines_bench.py --magnitude      # |coefficients| instead of signed

Runs the real `baselines` entry point (experiments/wavelet_baselines.yaml) against a
finished search in the benchmark store (benchmarks/results/search.db, written by
search_bench.py), so every classifier is scored on exactly the CNN's outer test folds.
Prints the ranking table as markdown and the wall time.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
STORE = ROOT / "benchmarks" / "results" / "search.db"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="experiments/wavelet_baselines.yaml")
    parser.add_argument("--search-run", default="", help="default: the latest finished search")
    parser.add_argument("--magnitude", action="store_true",
                        help="run the config with features.magnitude: true")
    args = parser.parse_args()
    if args.magnitude:
        args.config = magnitude_variant(ROOT / args.config)
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{STORE}", PYTHONUNBUFFERED="1")
    env.pop("MLFLOW_RUN_ID", None)
    started = time.monotonic()
    status = subprocess.run([sys.executable, "-m", "tune.baselines", "--config", args.config,
                             "--search-run", args.search_run], cwd=ROOT, env=env).returncode
    print(f"\nwall time: {time.monotonic() - started:.0f} s, exit {status}")
    return status


def magnitude_variant(config: Path) -> str:
    """Writes the config with features.magnitude: true to a temporary file; returns its path."""
    raw = yaml.safe_load(config.read_text())
    raw["name"] += "-magnitude"
    raw["features"]["magnitude"] = True
    out = Path(tempfile.mkdtemp()) / config.name
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(out)


if __name__ == "__main__":
    sys.exit(main())
