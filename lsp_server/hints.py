"""The hint scheduler: "unlikely code here" diagnostics, computed after a pause in typing.

Every edit (re)starts a timer for its document; when it runs out, the model scores a
window of lines around the edit (features/hints.py) and the unlikely stretches are
published as Hint diagnostics.  An inline request pauses the timer (the keystroke's
suggestion matters more) and schedules it again when done; a hint job already running
gives way to it at its next forward (it is a BACKGROUND job on the model thread).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from typing import TYPE_CHECKING

from lsprotocol import types

from infill_engine.request import InfillCancelled, InfillError

from .features.hints import unlikely_hints
from .model_worker import BACKGROUND, EngineUnavailable

if TYPE_CHECKING:
    from .session import DiffillServer

log = logging.getLogger(__name__)

HINT_MIN_DELAY_S = 0.5  # hints run the model over a whole window: wait for a pause in typing
HINT_WINDOW_LINES = 40


class HintScheduler:
    def __init__(self, session: DiffillServer) -> None:
        self._session = session
        self._tasks: dict[str, asyncio.Task] = {}  # uri -> its pending (or running) hint job
        self._published: set[str] = set()  # documents with hint diagnostics published

    def schedule(self, uri: str, around: int | None = None) -> None:
        """Hints for `uri` after the next pause, around offset `around` (the last edit)."""
        session = self._session
        if not session.feature_on("unlikely_hints") or uri not in session.documents:
            return
        self.pause(uri)
        self._tasks[uri] = asyncio.ensure_future(self._after_pause(uri, around))

    def pause(self, uri: str) -> None:
        task = self._tasks.pop(uri, None)
        if task is not None:
            task.cancel()

    def cancel_all(self) -> None:
        for task in self._tasks.values():
            task.cancel()

    def clear(self, uri: str | None = None) -> None:
        """Stop hinting `uri` (every document when None) and withdraw its published hints."""
        for target in [uri] if uri else list(self._published):
            self.pause(target)
            if target in self._published:
                self._published.discard(target)
                self._session.text_document_publish_diagnostics(
                    types.PublishDiagnosticsParams(uri=target, diagnostics=[])
                )

    async def _after_pause(self, uri: str, around: int | None) -> None:
        session = self._session
        await asyncio.sleep(max(HINT_MIN_DELAY_S, session.settings.debounce_ms / 1000))
        if uri not in session.documents:
            return
        doc = session.documents.get(uri)
        if not session.usable(doc):
            return
        version = doc.version
        line = doc.position_at(around).line if around is not None else 0
        first = max(0, line - HINT_WINDOW_LINES // 2)
        last = min(len(doc.lines) - 1, first + HINT_WINDOW_LINES)
        start, end = doc.lines.start(first), doc.line_bounds(last)[1]
        cancel = threading.Event()
        try:
            # BACKGROUND: queued behind any keystroke, and a keystroke arriving while it runs
            # stops it at its next forward (model_worker.py); the inline request re-schedules it.
            hints = await session.worker.run(
                functools.partial(unlikely_hints, cancel=cancel.is_set), doc.text, start, end,
                settings=session.settings, cancel=cancel, priority=BACKGROUND,
            )
        except (InfillError, InfillCancelled, EngineUnavailable) as exc:
            log.debug("hints skipped: %s", exc)
            return
        if not session.is_current(uri, version):
            return
        diagnostics = [
            types.Diagnostic(
                range=doc.range_of(h.start, h.end),
                message=f"unlikely code here (the model gives it {h.probability:.1%})",
                severity=types.DiagnosticSeverity.Hint,
                source="diffill",
            )
            for h in hints
        ]
        self._published.add(uri)
        session.text_document_publish_diagnostics(
            types.PublishDiagnosticsParams(uri=uri, diagnostics=diagnostics, version=version)
        )
