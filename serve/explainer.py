"""Explanations in a process of their own, paused while the replica scores.

A Deep SHAP explanation takes seconds of CPU, most of it Python building and tracing
gradient graphs. In the replica's process it held the interpreter lock and shared
TensorFlow's threads with scoring: on 2 cores `/predict`'s p99 rose to 2.7-4.5x its idle
value while explanations ran (docs/benchmarks.md). Here they run in one child process,
started on the first `/explain`, which the replica stops (SIGSTOP) while any scoring
request is in flight and continues (SIGCONT) when none is: scoring never shares the CPU
with an explanation, under a CPU quota too, and an idle replica explains at full speed.
(A lower priority alone was measured and not kept: SCHED_IDLE starved explanations
whenever anything else ran on the host, and under a container's CPU quota the idle-class
work still spent the quota that scoring then lacked, 3.1x p99.)

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
        self.paused = False

    def pause(self) -> None:
        """Stops the child (scoring has started); its work resumes with `resume`."""
        self.paused = True
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Continues the child (no scoring in flight)."""
        self.paused = False
        self._signal(signal.SIGCONT)

    def _signal(self, signum: int) -> None:
        for process in self.processes():
            try:
                os.kill(process.pid, signum)
            except ProcessLookupError:
                pass  # ended on its own; the pool notices

    def processes(self) -> list:
        """Returns the child processes (none before the first `submit`)."""
        # the pool keeps them in a private dict: the only handle on their pids
        return list((getattr(self.pool, "_processes", None) or {}).values())

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
        if self.paused:  # a child started while scoring runs waits for it too
            self.pause()
        return self.running

    def close(self) -> None:
        """Ends the child process (its running explanation with it)."""
        if self.pool is not None:
            for process in self.processes():
                process.kill()  # a SHAP call in progress would otherwise be waited for
            self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool, self.model_uri, self.running = None, None, None


def start_child(model_uri: str, tracking_uri: str, threads: int) -> None:
    """Runs in the child: dies with its parent, loads the model."""
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


def explain_in_child(raw: np.ndarray, method: str, expert: int | None) -> Explanation:
    """Runs in the child: the explanation of `raw` by the loaded model."""
    from mammo_core.explanations import explain

    return explain(_predictor, raw, method, expert)
