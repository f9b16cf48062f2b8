"""The model thread: a bounded queue in front, continuous batching behind.

One thread owns the model.  Requests wait in a `queue.Queue` (full: the caller answers
503); each step the thread takes in waiting requests up to `max_batch`, runs one forward
for every active hole together (hole_batch.py), and hands back each request the moment
its hole is complete, so a short hole never waits for a long one.  Cancellation and the
per-request deadline are checked before every forward.

Models that cannot share a forward across requests (DreamOn, whose holes resize, and a
checkpoint's remote code; `hole_batch.can_batch`) get `Engine.infill` one request at a time,
behind the same queue, limits and cancellation.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from infill_engine.engine import Engine
from infill_engine.request import InfillCancelled, InfillRequest, InfillResult

from .hole_batch import ContextBatch, HoleLoop, can_batch, forward_holes
from .metrics import Metrics

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """Too many requests are waiting; the client should retry later."""


class InfillTimeout(Exception):
    """The request ran past its deadline (queueing included)."""


@dataclass
class Job:
    req: InfillRequest | None  # None: a `call` job
    deadline: float
    future: Future = field(default_factory=Future)
    loop: HoleLoop | None = None
    call: Callable[[Engine], Any] | None = None  # other model work (score, repair): run whole, between steps

    def stop_reason(self) -> Exception | None:
        if self.req is not None and self.req.cancel is not None and self.req.cancel():
            return InfillCancelled()
        if time.monotonic() > self.deadline:
            return InfillTimeout("the request took longer than its timeout")
        return None

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)

    def succeed(self, result: Any) -> None:
        if not self.future.done():
            self.future.set_result(result)


class Batcher:
    def __init__(self, engine: Engine, max_batch: int = 16, max_queue: int = 64, metrics: Metrics | None = None):
        self.engine, self.max_batch = engine, max(1, max_batch)
        self.metrics = metrics or Metrics()
        self.batching = can_batch(engine)
        self._queue: queue.Queue[Job] = queue.Queue(maxsize=max_queue)
        self._stop = threading.Event()
        self.metrics.watch_queue(self._queue.qsize)
        self._thread = threading.Thread(target=self._run, name="diffill-batcher", daemon=True)
        self._thread.start()

    @property
    def queue_depth(self) -> int:
        return self._queue.qsize()

    def submit(self, req: InfillRequest, timeout_s: float) -> Future:
        """Queue `req`; the future holds its InfillResult or the exception that ended it."""
        return self._put(Job(req, time.monotonic() + timeout_s))

    def call(self, fn: Callable[[Engine], Any], timeout_s: float) -> Future:
        """fn(engine) on the model thread, between two batched steps; the future holds its value."""
        return self._put(Job(None, time.monotonic() + timeout_s, call=fn))

    def _put(self, job: Job) -> Future:
        try:
            self._queue.put_nowait(job)
        except queue.Full:
            raise QueueFull() from None
        return job.future

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    # -- the model thread -----------------------------------------------------------------------
    def _run(self) -> None:
        torch.set_grad_enabled(False)
        active: list[Job] = []
        context: ContextBatch | None = None
        while not self._stop.is_set():
            joined = self._take(active)
            for job in [job for job in joined if job.call is not None]:
                self._run_call(job)
            joined = [job for job in joined if job.call is None]
            if not self.batching:
                for job in joined:
                    self._run_alone(job)
                continue
            for job in joined:
                if self._start(job):
                    active.append(job)
                    context = None
            left = [job for job in active if not self._stopped(job)]
            if len(left) != len(active):
                active, context = left, None
            if not active:
                continue
            try:
                context = context or ContextBatch([job.loop for job in active])
                logits = forward_holes(self.engine.backend, [job.loop for job in active], context)
                self.metrics.batch_size.observe(len(active))
                refreshed = [job.loop.advance(part) for job, part in zip(active, logits)]
                if any(refreshed):  # a loop computed its context again: pad the new one in
                    context = None
            except Exception as exc:  # a broken batch fails its requests, never the thread
                log.exception("batched forward failed")
                for job in active:
                    job.fail(exc)
                active, context = [], None
                continue
            finished = [job for job in active if job.loop.done]
            for job in finished:
                self._finish(job, job.loop.result())
            if finished:
                active, context = [job for job in active if not job.loop.done], None

    def _take(self, active: list[Job]) -> list[Job]:
        """Waiting jobs that fit beside the active ones; blocks briefly only when idle."""
        room = self.max_batch - len(active) if self.batching else 1
        taken: list[Job] = []
        while len(taken) < room:
            try:
                job = self._queue.get(timeout=0.1) if not active and not taken else self._queue.get_nowait()
            except queue.Empty:
                break
            # Running from here on: a caller that gives up now must cancel through req.cancel.
            if job.future.set_running_or_notify_cancel():
                taken.append(job)
        return taken

    def _start(self, job: Job) -> bool:
        if self._stopped(job):
            return False
        try:
            job.loop = HoleLoop(self.engine, job.req)
        except Exception as exc:  # InfillError and the like: the request's fault, not the batch's
            job.fail(exc)
            return False
        return True

    def _stopped(self, job: Job) -> bool:
        reason = job.stop_reason()
        if isinstance(reason, InfillCancelled):
            self.metrics.errors.labels("cancelled").inc()
        if reason is not None:
            job.fail(reason)
        return reason is not None

    def _run_call(self, job: Job) -> None:
        if self._stopped(job):
            return
        try:
            job.succeed(job.call(self.engine))
        except Exception as exc:
            job.fail(exc)

    def _run_alone(self, job: Job) -> None:
        if self._stopped(job):
            return
        user_cancel = job.req.cancel
        job.req.cancel = lambda: (user_cancel is not None and user_cancel()) or time.monotonic() > job.deadline
        try:
            self.metrics.batch_size.observe(1)
            self._finish(job, self.engine.infill(job.req))
        except InfillCancelled:
            job.req.cancel = user_cancel
            self._stopped(job) or job.fail(InfillCancelled())
        except Exception as exc:
            job.fail(exc)

    def _finish(self, job: Job, result: InfillResult) -> None:
        committed = sum(len(c.token_confidences) for c in result.candidates[:1])
        if result.forwards:
            self.metrics.tokens_per_forward.observe(committed / result.forwards)
        job.succeed(result)
