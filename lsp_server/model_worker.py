"""The one thread the model runs on.

The engine is not re-entrant for batch work, so every model call (and the load) goes
through a single-worker executor, one at a time, while the asyncio loop stays free to
answer `shutdown`, other documents and cancellations.  A cancelled request sets its
event; the engine polls it before every denoising step and stops there.

A job is a plain function and its arguments, `run(fn, *args)`: the worker calls
`fn(engine, *args)` on its thread, so the features need no closures to reach the engine.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, TypeVar

from infill_engine.request import InfillCancelled

from .settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

# DIFFILL_MODEL=tiny-random picks the tiny random-weight engine (fast tests, benchmarks
# of the plumbing); any other value is a model path or hub id that overrides settings.
MODEL_ENV = "DIFFILL_MODEL"
THREADS_ENV = "DIFFILL_THREADS"
SERVER_TOKEN_ENV = "DIFFILL_SERVER_TOKEN"  # the token for diffill.server.url, kept out of settings files


class EngineUnavailable(Exception):
    """The model could not be loaded; the message says why and what to change."""


def cpu_threads() -> int:
    """Threads torch may use on the CPU: half the cores (at least one) unless
    $DIFFILL_THREADS says otherwise.  An editor's helper must leave the editor, the
    compiler and the user's other work room; and on a busy machine a thread pool that
    wants every core spins against the other processes (on a loaded 2-core box one
    thread ran a tiny model ~10x faster than two)."""
    value = os.environ.get(THREADS_ENV, "")
    if value.isdigit() and int(value) > 0:
        return int(value)
    return max(1, (os.cpu_count() or 2) // 2)


def load_engine(settings: Settings):
    """Build the engine the settings (or $DIFFILL_MODEL) ask for.  Runs on the worker."""
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


class ModelWorker:
    def __init__(self, loader: Callable[[Settings], Any] = load_engine,
                 on_state: Callable[[str, str | None], None] | None = None) -> None:
        self._loader = loader
        self._on_state = on_state or (lambda state, message: None)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="diffill-model")
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
            self._loading = loop.run_in_executor(self._executor, self._load, settings)
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

    async def run(self, fn: Callable[..., T], *args: Any, settings: Settings, cancel: threading.Event) -> T:
        """fn(engine, *args) on the worker, with the engine `settings` ask for.  Cancelling
        the awaiting task sets `cancel`, which the engine sees before its next step
        (InfillCancelled)."""
        try:
            engine = await self.ensure_engine(settings)
            loop = asyncio.get_running_loop()

            def guarded() -> T:
                # A job queued behind a long one may have been cancelled while it waited.
                if cancel.is_set():
                    raise InfillCancelled()
                return fn(engine, *args)

            return await loop.run_in_executor(self._executor, guarded)
        except asyncio.CancelledError:
            cancel.set()
            raise
