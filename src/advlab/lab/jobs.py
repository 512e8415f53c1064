"""Long operations of the lab as jobs: run off the event loop in a bounded pool, with progress,
cancellation and a stream of state snapshots (for server-sent events).

A job's function receives the Job and reports through ``job.update(...)``; cancellation is
cooperative: ``job.check()`` raises :class:`Cancelled` once the user asked to stop. The lab calls
``check`` from a forward hook on the job's own copy of the model, so every library function is
interruptible between forward passes without knowing about jobs.
"""

from __future__ import annotations

import threading
import time
import traceback
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn

from advlab.errors import AdvlabError

TERMINAL = ("done", "error", "cancelled")


class Cancelled(Exception):  # noqa: N818 (a user's request, not a bug)
    """The user cancelled the job."""


class TooBusy(AdvlabError):
    """More jobs are waiting than the lab accepts."""


class Job:
    """One long operation: status, progress in [0, 1] (None when unknown), live fields, result or error."""

    def __init__(self, kind: str) -> None:
        self.id = uuid.uuid4().hex[:16]
        self.kind = kind
        self.status = "queued"
        self.progress: float | None = 0.0
        self.message = "waiting for a free worker"
        self.live: dict = {}
        self.result: dict | None = None
        self.error: str | None = None
        self.version = 0
        self.started = time.time()
        self.expected_forwards: int | None = None
        self.forwards = 0
        self._cancel = threading.Event()
        self._lock = threading.Lock()

    def update(self, progress: float | None = None, message: str | None = None, **live) -> None:
        with self._lock:
            if progress is not None:
                self.progress = max(0.0, min(1.0, float(progress)))
            if message is not None:
                self.message = message
            self.live.update(live)
            self.version += 1

    def cancel(self) -> None:
        self._cancel.set()
        with self._lock:
            if self.status == "queued":
                self.status, self.message = "cancelled", "cancelled before it started"
            self.version += 1

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check(self) -> None:
        if self._cancel.is_set():
            raise Cancelled()

    def tick(self) -> None:
        """One forward pass done: check for cancellation and advance the progress estimate."""
        self.check()
        self.forwards += 1
        if self.expected_forwards:
            with self._lock:
                self.progress = min(0.99, self.forwards / self.expected_forwards)
                self.version += 1

    def finish(self, status: str, result: dict | None = None, error: str | None = None) -> None:
        with self._lock:
            self.status, self.result, self.error = status, result, error
            if status == "done":
                self.progress, self.message = 1.0, "done"
            elif status == "cancelled":
                self.message = "cancelled"
            else:
                self.message = error or "failed"
            self.version += 1

    def snapshot(self) -> dict:
        with self._lock:
            return {"id": self.id, "kind": self.kind, "status": self.status, "progress": self.progress,
                    "message": self.message, "live": dict(self.live), "result": self.result, "error": self.error,
                    "version": self.version, "seconds": round(time.time() - self.started, 2)}


def watched_copy(model: nn.Module, job: Job) -> nn.Module:
    """A private copy of model (jobs never share a module's modes or hooks) whose every forward pass
    calls job.tick(): progress, and cancellation between passes."""
    import copy

    clone = copy.deepcopy(model).eval()
    clone.register_forward_pre_hook(lambda _module, _inputs: job.tick())
    return clone


class JobRunner:
    """A pool of at most max_workers jobs at once; at most max_waiting more wait for a worker."""

    def __init__(self, max_workers: int = 2, max_waiting: int = 16, keep: int = 200) -> None:
        self.pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="advlab-lab")
        self.max_workers, self.max_waiting, self.keep = max_workers, max_waiting, keep
        self.jobs: OrderedDict[str, Job] = OrderedDict()
        self.lock = threading.Lock()

    def submit(self, kind: str, work: Callable[[Job], dict]) -> Job:
        with self.lock:
            waiting = sum(1 for j in self.jobs.values() if j.status == "queued")
            if waiting >= self.max_waiting:
                raise TooBusy(f"{waiting} jobs are already waiting; cancel one or try again later")
            job = Job(kind)
            self.jobs[job.id] = job
            while len(self.jobs) > self.keep:  # forget the oldest finished jobs
                oldest = next((k for k, j in self.jobs.items() if j.status in TERMINAL), None)
                if oldest is None:
                    break
                del self.jobs[oldest]
        self.pool.submit(self._run, job, work)
        return job

    def _run(self, job: Job, work: Callable[[Job], dict]) -> None:
        if job.cancelled:
            job.finish("cancelled")
            return
        with job._lock:
            job.status, job.message, job.version = "running", "running", job.version + 1
        try:
            with torch.inference_mode(False):
                result = work(job)
        except Cancelled:
            job.finish("cancelled")
        except AdvlabError as exc:
            job.finish("error", error=str(exc))
        except Exception as exc:  # a bug: keep the lab alive, tell the user, log the traceback
            traceback.print_exc()
            job.finish("error", error=f"internal error ({type(exc).__name__}: {exc})")
        else:
            job.finish("done", result=result)

    def get(self, job_id: str) -> Job | None:
        with self.lock:
            return self.jobs.get(job_id)

    def shutdown(self) -> None:
        for job in list(self.jobs.values()):
            job.cancel()
        self.pool.shutdown(wait=False, cancel_futures=True)
