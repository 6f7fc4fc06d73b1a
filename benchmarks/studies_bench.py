"""Every study's quick pipeline on a fixture in its collection's original layout: wall time.

    python benchmarks/studies_bench.py [--studies cbis_5class mias_roi_patches ...]

No collection but microcal is on these machines, so this measures what can be measured
here: how long `python -m tune.pipeline --config experiments/<study>_quick.yaml` (search ->
register -> evaluate, one run tree) takes on the fixture the tests write
(tests/collection_fixtures.py), next to the microcal quick pipeline on the real shared
data in the same session. The fixtures' metrics mean nothing (their classes are made easy
to learn); the seed figures to compare with on real copies are in docs/benchmarks.md.

Prints a markdown table and writes benchmarks/results/studies.json.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from collection_fixtures import write_cbis_arrays, write_cbis_folders, write_mias  # noqa: E402

STUDIES = {"microcal": None, "cbis_mass_vs_calc": "cbis_npy",
           "cbis_benign_vs_malignant": "cbis_npy", "cbis_5class": "cbis_npy",
           "cbis_siamese_mass_vs_calc": "cbis_npy", "cbis_folders_mass_vs_calc": "cbis_folders",
           "mias_normal_vs_abnormal": "mias", "mias_roi_patches": "mias"}


def fixtures(folder: Path) -> dict[str, Path]:
    """Writes the three collections' fixtures (the tests' sizes); returns their folders."""
    return {"cbis_npy": write_cbis_arrays(folder / "cbis_npy"),
            "cbis_folders": write_cbis_folders(folder / "cbis_folders"),
            "mias": write_mias(folder / "mias", women=16)}


def run_pipeline(study: str, data_dir: Path | None, store: Path) -> dict:
    """Runs the study's quick pipeline in a fresh store; returns its wall time and summary."""
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{store / 'mlflow.db'}",
               MAMMO_RAY_STORAGE=str(store / "ray"), PYTHONUNBUFFERED="1")
    env.pop("MLFLOW_RUN_ID", None)
    command = [sys.executable, "-m", "tune.pipeline", "--config",
               f"experiments/{study}_quick.yaml"] + (["--data-dir", str(data_dir)] if data_dir else [])
    started = time.monotonic()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"{study} failed:\n{result.stderr[-2000:]}")
    search = re.search(r"FINISHED: (CV test AUC [^;]*)", result.stdout)
    images = re.search(r"^all\s+(\d+)", result.stdout, re.M)
    return {"study": study, "seconds": round(seconds, 1),
            "images": int(images.group(1)) if images else None,
            "search": search.group(1) if search else ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", nargs="+", default=list(STUDIES), choices=list(STUDIES))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        data = fixtures(Path(tmp) / "data")
        for k, study in enumerate(args.studies, 1):
            print(f"[{k}/{len(args.studies)}] {study} ...", flush=True)
            collection = STUDIES[study]
            rows.append(run_pipeline(study, data[collection] if collection else None,
                                     Path(tmp) / f"store-{study}"))
            print(f"    {rows[-1]['seconds']} s", flush=True)
    print("\n| study | data | images | quick pipeline wall time (s) |\n|---|---|---|---|")
    for row in rows:
        source = "shared data" if STUDIES[row["study"]] is None else "fixture"
        print(f"| {row['study']} | {source} | {row['images']} | {row['seconds']} |")
    out = ROOT / "benchmarks" / "results" / "studies.json"
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "rows": rows}, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
