"""Explanations in a process of their own, at the lowest CPU priority.

A Deep SHAP explanation takes seconds of CPU, most of it Python building and tracing
gradient graphs. In the replica's process it held the interpreter lock and shared
TensorFlow's threads with scoring: on 2 cores `/predict`'s p99 rose to 2.7-4.5x its idle
value while explanations ran (docs/benchmarks.md). Here they run in one child process,
started on the first `/explain`, that once its model is loaded runs under Linux's
SCHED_IDLE policy (and nice 19): the kernel gives it the CPU that scoring leaves. Nice alone is too weak a step: Ray already runs its
workers, the replica among them, at nice 15, four steps from the lowest.

The child loads the same registered version as the replica (by version, not alias) and
dies with the replica (PR_SET_PDEATHSIG), so no explainer outlives its server.
"""
from __future__ import annotations

import ctypes
import multiprocessing
import os
import signal
from concurrent.futures import Future, ProcessPoolExecutor

import numpy as np

from mammo_core.explanations import Explanation

LOWEST_PRIORITY = 19
PR_SET_PDEATHSIG = 1  # linux/prctl.h

_predictor = None  # the child's model: a pool initializer can only hand it over this way


class Explainer:
    """One explanation at a time, in a child process that holds the replica's model.

    The slot is the running future, held until the child has really finished (a request
    that timed out does not free it). The child starts on the first `submit` and again
    after the model changed; `close` ends it.
    """

    def __init__(self, threads: int):
        self.threads = threads
        self.pool: ProcessPoolExecutor | None = None
        self.model_uri: str | None = None
        self.running: Future | None = None

    def busy(self) -> bool:
        """Returns True while an explanation is still running (timed out or not)."""
        return self.running is not None and not self.running.done()

    def submit(self, model_uri: str, tracking_uri: str, raw: np.ndarray, method: str,
               expert: int | None) -> Future:
        """Starts explaining `raw` with the model at `model_uri` (a version, not an alias);
        returns the future of its Explanation."""
        if self.pool is None or model_uri != self.model_uri:
            self.close()
            self.pool = ProcessPoolExecutor(
                max_workers=1, mp_context=multiprocessing.get_context("spawn"),
                initializer=start_child, initargs=(model_uri, tracking_uri, self.threads))
            self.model_uri = model_uri
        self.running = self.pool.submit(explain_in_child, raw, method, expert)
        return self.running

    def close(self) -> None:
        """Ends the child process (its running explanation with it)."""
        if self.pool is not None:
            for process in list(getattr(self.pool, "_processes", {}).values()):
                process.kill()  # a SHAP call in progress would otherwise be waited for
            self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool, self.model_uri, self.running = None, None, None


def start_child(model_uri: str, tracking_uri: str, threads: int) -> None:
    """Runs in the child: dies with its parent, loads the model, then drops to the lowest
    priority (loading at the replica's own priority keeps a first `/explain` on a busy
    host within its deadline; the explanations are what must give way to scoring)."""
    global _predictor
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() == 1:  # the parent died before the line above took effect
        os._exit(1)
    import mlflow

    from mammo_core.training import limit_tensorflow_threads

    limit_tensorflow_threads(threads)
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    _predictor = mlflow.pyfunc.load_model(model_uri).unwrap_python_model().predictor
    os.nice(LOWEST_PRIORITY)
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # any user may lower its own


def explain_in_child(raw: np.ndarray, method: str, expert: int | None) -> Explanation:
    """Runs in the child: the explanation of `raw` by the loaded model."""
    from mammo_core.explanations import explain

    return explain(_predictor, raw, method, expert)
