"""Starting or joining Ray: a local node bound to 127.0.0.1, or an existing cluster."""
from __future__ import annotations

import os

import ray

# Trials print nothing but TensorFlow's start-up banner; keep worker logs readable.
# A reused worker (search.reuse_actors) waits for the stopped trial's thread to reach its
# next report (at most an epoch) before the next trial; Tune's default of 2 s is shorter
# than an epoch on a loaded core, and a failed wait starts a new worker after all.
WORKER_ENV = {"TF_CPP_MIN_LOG_LEVEL": "2", "TUNE_FUNCTION_THREAD_TIMEOUT_S": "120"}


def start_ray() -> str:
    """Joins the cluster at RAY_ADDRESS, else starts a local node; returns a description.

    MLFLOW_RUN_ID is removed from the environment first: workers inherit it and every
    trial would reopen the project's run. A local node listens on 127.0.0.1 only (see
    tune/__init__.py for why that is decided before ray is imported).
    """
    os.environ.pop("MLFLOW_RUN_ID", None)
    # Keeping one checkpoint per trial (the best epoch) forces a small experiment snapshot
    # after each new best; at this size that costs milliseconds, so Tune's warning is noise.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")
    address = os.environ.get("RAY_ADDRESS")
    if ray.is_initialized():
        return "ray: already initialised"
    if address:
        ray.init(address=address, runtime_env={"env_vars": WORKER_ENV}, log_to_driver=False)
        return f"ray: joined cluster at {address} ({ray.cluster_resources().get('CPU', 0):.0f} CPUs)"
    # address="local": always a new node of our own, never another Ray left on this machine
    ray.init(address="local", include_dashboard=False, runtime_env={"env_vars": WORKER_ENV},
             log_to_driver=False, configure_logging=False)
    return f"ray: local node on 127.0.0.1 ({ray.cluster_resources().get('CPU', 0):.0f} CPUs)"
