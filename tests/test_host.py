"""The CPUs a replica may use: cores, fewer under a cgroup CPU quota (v1 and v2 trees
written here as the kernel lays them out)."""
from __future__ import annotations

import os
import re
from pathlib import Path

from concurrent.futures import ThreadPoolExecutor

import numpy as np

from mammo_core.config import load_experiment
from mammo_core.ensemble import Ensemble
from mammo_core.hypermodel import build_model
from mammo_core.predictor import EnsemblePredictor
from serve.host import WAYS, cpu_quota, fastest_expert_calls, usable_cpus, ways_of
from serve.settings import ServeSettings
from serve.app import tf_threads


def v2_tree(root: Path, quotas: dict[str, str]) -> Path:
    """Writes cpu.max files {cgroup path: content}; returns a /proc/self/cgroup for the
    deepest path."""
    for path, content in quotas.items():
        folder = root / path.lstrip("/")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "cpu.max").write_text(content + "\n")
    proc = root / "proc_cgroup"
    proc.write_text(f"0::{max(quotas, key=len)}\n")
    return proc


def v1_tree(root: Path, quotas: dict[str, int], period: int = 100_000) -> Path:
    for path, quota in quotas.items():
        folder = root / "cpu" / path.lstrip("/")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "cpu.cfs_quota_us").write_text(f"{quota}\n")
        (folder / "cpu.cfs_period_us").write_text(f"{period}\n")
    proc = root / "proc_cgroup"
    proc.write_text(f"4:memory:/x\n2:cpu,cpuacct:{max(quotas, key=len)}\n0::/\n")
    return proc


def test_a_v2_quota_anywhere_on_the_path_counts_and_the_smallest_wins(tmp_path):
    proc = v2_tree(tmp_path, {"/": "max 100000", "/docker": "150000 100000",
                              "/docker/app": "max 100000"})
    assert cpu_quota(proc, tmp_path) == 1.5
    proc = v2_tree(tmp_path / "b", {"/": "max 100000", "/a": "50000 100000",
                                    "/a/b": "200000 100000"})
    assert cpu_quota(proc, tmp_path / "b") == 0.5


def test_a_v1_quota_and_no_quota(tmp_path):
    proc = v1_tree(tmp_path, {"/": -1, "/slow": 66_666})
    assert abs(cpu_quota(proc, tmp_path) - 0.66666) < 1e-6
    assert cpu_quota(v1_tree(tmp_path / "none", {"/": -1}), tmp_path / "none") is None
    assert cpu_quota(tmp_path / "missing", tmp_path) is None


def test_usable_cpus_are_the_cores_rounded_down_to_the_quota(tmp_path):
    cores = len(os.sched_getaffinity(0))
    assert usable_cpus(v2_tree(tmp_path, {"/": "max 100000"}), tmp_path) == cores
    assert usable_cpus(v2_tree(tmp_path / "q", {"/q": "66666 100000"}), tmp_path / "q") == 1
    huge = v2_tree(tmp_path / "h", {"/h": f"{100_000 * (cores + 8)} 100000"})
    assert usable_cpus(huge, tmp_path / "h") == cores


def test_tf_threads_auto_is_measured_and_a_number_is_kept():
    assert tf_threads(ServeSettings()) == usable_cpus() >= 1
    assert tf_threads(ServeSettings(tf_threads=3)) == 3
    assert ServeSettings(tf_threads="2").tf_threads == 2  # from the command line


def test_the_expert_calls_are_measured_every_way_on_both_sizes():
    quick = load_experiment(Path(__file__).resolve().parents[1] / "experiments" / "microcal_quick.yaml")
    experts = [build_model(quick.hyperparameters, (60, 60, 1), quick.model, seed=s) for s in (0, 1)]
    predictor = EnsemblePredictor(experts, Ensemble(np.array([0.5, 0.5]), 0.5), quick, 8)
    assert ways_of(predictor) == WAYS
    with ThreadPoolExecutor(2) as threads:
        way, line = fastest_expert_calls(predictor, threads, repeats=2)
    assert way in WAYS
    times = r"[\d.]+ / [\d.]+ / [\d.]+ ms"
    assert re.fullmatch(rf"measured sequential / concurrent / graph: 1 image {times}, "
                        rf"32 images {times}", line), line


def test_a_predictor_of_older_code_is_called_in_turn():
    class Older:  # what a model registered before ships in its own mammo_core
        def expert_probabilities(self, images):
            return images

    class LastStop:  # threads, no graph yet
        def expert_probabilities(self, images, executor=None):
            return images
    assert ways_of(Older()) == ("sequential",)
    assert ways_of(LastStop()) == ("sequential", "concurrent")
