"""What this host gives a replica: the CPUs it may really use, read at start-up."""
from __future__ import annotations

import math
import os
from pathlib import Path

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
