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


# how a replica may call one model call's experts (ServeSettings.expert_calls)
WAYS = ("sequential", "concurrent", "graph")
WAY_NAMES = {"sequential": "one after the other", "concurrent": "at once on threads",
             "graph": "as one graph"}


def ways_of(predictor) -> tuple[str, ...]:
    """Returns the WAYS the predictor can call its experts: a model registered before
    that ships an older mammo_core (its `code_paths`) may lack the graph or the threads."""
    return _class_ways(type(predictor))


@functools.cache
def _class_ways(cls: type) -> tuple[str, ...]:
    # asked on every model call: the signature is read once per predictor class
    parameters = inspect.signature(cls.expert_probabilities).parameters
    return tuple(w for w in WAYS if set(way_arguments(w, None)) <= set(parameters))


def way_arguments(way: str, executor: Executor | None) -> dict:
    """Returns the keyword arguments of `expert_probabilities` / `predict` for a way."""
    return {"sequential": {}, "concurrent": {"executor": executor}, "graph": {"graph": True}}[way]


def fastest_expert_calls(predictor, executor: Executor, repeats: int = 5) -> tuple[str, str]:
    """Returns the way of ways_of(predictor) in which the experts score a 1-image and a
    32-image batch fastest on this host now, and a line with the medians.

    Synthetic patches, the ways interleaved, compiled steps warmed first; the winner has
    the lowest time over sequential's, averaged over the two sizes. On a 2-vCPU host
    threads overlap one expert's dispatch with another's arithmetic (0.68 for one image,
    0.87 for 32), which a 0.67-CPU quota leaves no idle core for (1.38 and 1.17); one graph
    of all the experts pays one call's dispatch instead of one per expert
    (docs/benchmarks.md#expert-graph).
    """
    data = predictor.experiment.data
    shape = (2, *data.image_size) if data.pairs else tuple(data.image_size)
    rng = np.random.default_rng(0)
    ways = ways_of(predictor)
    ratios, parts = {w: [] for w in ways}, []
    for n, reps in ((1, 3 * repeats), (32, repeats)):
        images = predictor.model_inputs(rng.random((n, *shape), dtype=np.float32))
        times = {w: [] for w in ways}
        for _ in range(reps + 1):  # the first round warms each up and is dropped
            for way in ways:
                start = time.perf_counter()
                predictor.expert_probabilities(images, **way_arguments(way, executor))
                times[way].append(time.perf_counter() - start)
        medians = {w: float(np.median(times[w][1:])) * 1e3 for w in ways}
        for w in ways:
            ratios[w].append(medians[w] / medians["sequential"])
        parts.append(f"{n} image{'s' if n > 1 else ''} "
                     + " / ".join(f"{medians[w]:.1f}" for w in ways) + " ms")
    best = min(ways, key=lambda w: float(np.mean(ratios[w])))
    return best, f"measured {' / '.join(ways)}: " + ", ".join(parts)
