"""What this host gives a replica, read at start-up: the CPUs it may really use, and
whether its experts score faster at once or one after the other."""
from __future__ import annotations

import functools
import inspect
import math
import os
import time
from concurrent.futures import Executor
from pathlib import Path

import numpy as np

CGROUP_ROOT = Path("/sys/fs/cgroup")


def usable_cpus(proc_cgroup: Path = Path("/proc/self/cgroup"),
                root: Path = CGROUP_ROOT) -> int:
    """Returns the CPUs this process may use: the cores it may run on (affinity), fewer
    under a CPU quota (a container's `--cpus`, a cgroup's `cpu.max`), rounded up, at least 1.

    A container limited to 1 CPU on a 16-core host still sees 16 cores; TensorFlow sizing
    its thread pools to them would have 16 threads take turns on one CPU's time.
    """
    cores = (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
             else os.cpu_count()) or 1
    quota = cpu_quota(proc_cgroup, root)
    return max(1, min(cores, math.ceil(quota))) if quota else cores


def cpu_quota(proc_cgroup: Path = Path("/proc/self/cgroup"),
              root: Path = CGROUP_ROOT) -> float | None:
    """Returns the smallest CPU quota (quota / period, in CPUs) on the path from this
    process's cgroup up to the root, or None when there is none or it cannot be read.
    cgroup v2: `cpu.max` holds "<quota|max> <period>"; v1: cpu.cfs_quota_us (-1 = none)
    over cpu.cfs_period_us, under the `cpu` controller's mount."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    quotas = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "":  # cgroup v2
            base, read = root, read_v2
        elif "cpu" in controllers.split(","):
            base, read = root / "cpu", read_v1
        else:
            continue
        folder = base / path.lstrip("/")
        while True:
            quotas.append(read(folder))
            if folder == base or base not in folder.parents:
                break
            folder = folder.parent
    found = [q for q in quotas if q]
    return min(found) if found else None


def read_v2(folder: Path) -> float | None:
    try:
        quota, period = (folder / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def read_v1(folder: Path) -> float | None:
    try:
        quota = int((folder / "cpu.cfs_quota_us").read_text())
        return None if quota <= 0 else quota / int((folder / "cpu.cfs_period_us").read_text())
    except (OSError, ValueError):
        return None


def takes_executor(predictor) -> bool:
    """Returns whether the predictor can run its experts on an executor: a model
    registered before that ships an older mammo_core (its `code_paths`) cannot."""
    return _class_takes_executor(type(predictor))


@functools.cache
def _class_takes_executor(cls: type) -> bool:
    # asked on every model call: the signature is read once per predictor class
    return "executor" in inspect.signature(cls.expert_probabilities).parameters


def concurrent_is_faster(predictor, executor: Executor, repeats: int = 5
                         ) -> tuple[bool, str]:
    """Returns whether the experts score a 1-image and a 32-image batch faster at once on
    `executor` than one after the other, on this host now, and a line with the medians.

    Synthetic patches, the two ways interleaved, compiled steps warmed first. Concurrent
    wins when its time over sequential's, averaged over the two sizes, is under 1: 0.68
    for one image and 0.87 for 32 on a 2-vCPU host (threads overlap one expert's dispatch
    with another's arithmetic), 1.38 and 1.17 under a 0.67-CPU quota, which leaves no idle
    core to overlap with (docs/benchmarks.md#expert-calls).
    """
    data = predictor.experiment.data
    shape = (2, *data.image_size) if data.pairs else tuple(data.image_size)
    rng = np.random.default_rng(0)
    ratios, parts = [], []
    for n, reps in ((1, 3 * repeats), (32, repeats)):
        images = predictor.model_inputs(rng.random((n, *shape), dtype=np.float32))
        times = {None: [], executor: []}
        for _ in range(reps + 1):  # the first round warms both up and is dropped
            for way in times:
                start = time.perf_counter()
                predictor.expert_probabilities(images, way)
                times[way].append(time.perf_counter() - start)
        sequential, concurrent = (float(np.median(times[w][1:])) * 1e3 for w in times)
        ratios.append(concurrent / sequential)
        parts.append(f"{n} image{'s' if n > 1 else ''} {concurrent:.1f} vs {sequential:.1f} ms")
    return float(np.mean(ratios)) < 1.0, "measured at once vs in turn: " + ", ".join(parts)
