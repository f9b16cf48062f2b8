"""The one thread the model runs on.

The engine is not re-entrant for batch work, so every model call (and the load) goes
through one thread, one at a time, while the asyncio loop stays free to answer
`shutdown`, other documents and cancellations.  A cancelled request sets its event; the
engine polls it before every denoising step and stops there.

Jobs are taken by priority, then in arrival order: FOREGROUND (what the user is waiting
for: the keystroke's suggestion, an action, the load) before BACKGROUND (hints).  A
foreground job that arrives while a background one runs also sets the background job's
cancel event, so it gives way at its next step instead of making the keystroke wait for
the whole job (the hint job is re-scheduled after the keystroke anyway).  Under CPU
contention every job runs slower, so what the keystroke waits for behind it matters more.

Torch's CPU threads: see cpu_threads() and _quiet_openmp().

A job is a plain function and its arguments, `run(fn, *args)`: the worker calls
`fn(engine, *args)` on its thread, so the features need no closures to reach the engine.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import logging
import os
import threading
from concurrent.futures import Future
from typing import Any, Callable, TypeVar

from infill_engine.request import InfillCancelled

from .settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

# DIFFILL_MODEL=tiny-random picks the tiny random-weight engine (fast tests, benchmarks
# of the plumbing); any other value is a model path or hub id that overrides settings.
MODEL_ENV = "DIFFILL_MODEL"
THREADS_ENV = "DIFFILL_THREADS"
FOREGROUND, BACKGROUND = 0, 1  # job priorities: lower runs first
SERVER_TOKEN_ENV = "DIFFILL_SERVER_TOKEN"  # the token for diffill.server.url, kept out of settings files


class EngineUnavailable(Exception):
    """The model could not be loaded; the message says why and what to change."""


def cpu_threads() -> int:
    """Threads torch may use on the CPU: half the cores but at least two (where there are
    two) unless $DIFFILL_THREADS says otherwise.  An editor's helper must leave the editor,
    the compiler and the user's other work room, hence half; on a busy machine a thread pool
    that wants every core waits on the slowest of its threads, each sharing a core with
    someone else (OpenMP's spin-waiting made that far worse: see _quiet_openmp).  With idle
    threads sleeping, a second thread costs little beside a busy core and helps when the
    other core is free: on a 2-core box, `diffill bench --lsp --load 1`, p50 143.5 ms idle /
    179.3 ms beside one CPU burner with 2 threads, against 164.3 / 166.9 ms with one."""
    value = os.environ.get(THREADS_ENV, "")
    if value.isdigit() and int(value) > 0:
        return int(value)
    cores = os.cpu_count() or 2
    return min(cores, max(2, cores // 2))


def _quiet_openmp() -> None:
    """Make idle OpenMP threads sleep instead of spinning.  By default a thread that finishes
    its share of a matrix product spins for its next one (OMP_WAIT_POLICY active, Intel's
    KMP_BLOCKTIME 200 ms); beside other busy processes the spinners and the thread still
    working compete for the same cores.  Measured here on a loaded 2-core box with 2 torch
    threads and one CPU burner: p50 3.3 s per suggestion spinning, 0.4 s passive.  Must run
    before the OpenMP runtime starts (the first `import torch` in this process); the user's
    own setting wins."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ.setdefault("KMP_BLOCKTIME", "0")


def load_engine(settings: Settings):
    """Build the engine the settings (or $DIFFILL_MODEL) ask for.  Runs on the worker."""
    _quiet_openmp()
    import torch

    from infill_engine.engine import Engine  # torch import: only on the worker, only when needed

    if settings.server.url:  # a shared server does the model work: load nothing here
        from .remote_engine import RemoteEngine

        return RemoteEngine(settings.server.url, settings.server.token or os.environ.get(SERVER_TOKEN_ENV))
    if settings.device == "cpu":
        torch.set_num_threads(cpu_threads())
    override = os.environ.get(MODEL_ENV)
    if override == "tiny-random":
        return Engine.tiny_random()
    return Engine.load(
        override or settings.model,
        device=settings.device,
        trust_remote_code=settings.trust_remote_code,
        allow_network=settings.allow_network,
    )


def model_label(settings: Settings) -> str:
    if settings.server.url:
        return settings.server.url
    override = os.environ.get(MODEL_ENV)
    return override or settings.model or "bundled"


class ModelThread:
    """One daemon thread running jobs by (priority, arrival).  A daemon: a model call in
    progress must not hold the process open once the server has decided to exit."""

    def __init__(self, name: str = "diffill-model") -> None:
        self._jobs: list[tuple[int, int, Future, Callable[[], Any], threading.Event | None]] = []
        self._order = itertools.count()
        self._wake = threading.Condition()
        self._running: tuple[int, threading.Event | None] | None = None
        threading.Thread(target=self._loop, name=name, daemon=True).start()

    def submit(self, fn: Callable[[], T], priority: int = FOREGROUND,
               cancel: threading.Event | None = None) -> Future:
        fut: Future = Future()
        with self._wake:
            heapq.heappush(self._jobs, (priority, next(self._order), fut, fn, cancel))
            if self._running is not None and self._running[0] > priority and self._running[1] is not None:
                self._running[1].set()  # the background job in progress gives way at its next step
            self._wake.notify()
        return fut

    def _loop(self) -> None:
        while True:
            with self._wake:
                while not self._jobs:
                    self._wake.wait()
                priority, _, fut, fn, cancel = heapq.heappop(self._jobs)
                if not fut.set_running_or_notify_cancel():
                    continue
                self._running = (priority, cancel)
            try:
                result = fn()
            except BaseException as exc:  # handed to the awaiting coroutine
                fut.set_exception(exc)
            else:
                fut.set_result(result)
            finally:
                with self._wake:
                    self._running = None


class ModelWorker:
    def __init__(self, loader: Callable[[Settings], Any] = load_engine,
                 on_state: Callable[[str, str | None], None] | None = None) -> None:
        self._loader = loader
        self._on_state = on_state or (lambda state, message: None)
        self._thread = ModelThread()
        self._engine: Any = None
        self._key: tuple | None = None
        self._loading: asyncio.Future | None = None
        self._loading_key: tuple | None = None
        self._failed_key: tuple | None = None  # settings whose load failed: not retried per keystroke
        self.error: str | None = None

    @property
    def engine(self) -> Any:
        return self._engine

    def set_state(self, state: str, message: str | None = None) -> None:
        self._on_state(state, message)

    async def ensure_engine(self, settings: Settings) -> Any:
        """The engine for `settings`, loading it (on the worker) if the model changed.

        Concurrent callers share one load; a caller being cancelled does not cancel it.
        """
        key = settings.engine_key()
        if self._engine is not None and self._key == key:
            return self._engine
        if key == self._failed_key:
            raise EngineUnavailable(self.error or "the model is not available")
        if self._loading is None or self._loading_key != key:
            loop = asyncio.get_running_loop()
            self._loading_key = key
            self.set_state("loading", f"loading model {model_label(settings)}")
            self._loading = asyncio.wrap_future(self._thread.submit(lambda: self._load(settings)), loop=loop)
            self._loading.add_done_callback(lambda fut, k=key: self._loaded(fut, k))
        engine = await asyncio.shield(self._loading)
        if engine is None:
            raise EngineUnavailable(self.error or "the model is not available")
        return engine

    def forget_failure(self) -> None:
        """Let the next request try a load that failed before (the user fixed something)."""
        self._failed_key = None

    def _load(self, settings: Settings) -> Any:
        try:
            return self._loader(settings)
        except Exception as exc:  # any load failure becomes a message, not a dead server
            log.exception("model load failed")
            self.error = f"could not load model {model_label(settings)!r}: {exc}"
            return None

    def _loaded(self, fut: asyncio.Future, key: tuple) -> None:
        if fut.cancelled() or self._loading_key != key:
            return
        engine = fut.result()
        self._loading = None
        if engine is None:
            self._engine, self._key, self._failed_key = None, None, key
            self.set_state("error", self.error)
            return
        self._engine, self._key, self._failed_key, self.error = engine, key, None, None
        self.set_state("ready", None)

    async def run(self, fn: Callable[..., T], *args: Any, settings: Settings, cancel: threading.Event,
                  priority: int = FOREGROUND) -> T:
        """fn(engine, *args) on the worker, with the engine `settings` ask for.  Cancelling
        the awaiting task sets `cancel`, which the engine sees before its next step
        (InfillCancelled); so does a FOREGROUND job arriving while this BACKGROUND one runs."""
        try:
            engine = await self.ensure_engine(settings)
            loop = asyncio.get_running_loop()

            def guarded() -> T:
                # A job queued behind a long one may have been cancelled while it waited.
                if cancel.is_set():
                    raise InfillCancelled()
                return fn(engine, *args)

            return await asyncio.wrap_future(self._thread.submit(guarded, priority, cancel), loop=loop)
        except asyncio.CancelledError:
            cancel.set()
            raise
