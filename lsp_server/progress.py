"""`$/progress` for model work: the fraction of hole tokens committed, as a percentage.

The engine calls the hook from the worker thread after every denoising step; reports are
handed to the event loop (the only thread that writes to the client) and thinned out so
a 100-step fill does not send 100 notifications.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Callable

from lsprotocol import types
from pygls.lsp.server import LanguageServer

from . import capabilities


class ProgressReporter:
    def __init__(self, ls: LanguageServer, token: types.ProgressToken | None, title: str) -> None:
        self._ls = ls
        self._token = token
        self._title = title
        self._loop = asyncio.get_running_loop()
        self._last = -1

    @classmethod
    async def start(cls, ls: LanguageServer, token: types.ProgressToken | None, title: str,
                    create: bool, on_cancel: Callable[[], None] | None = None) -> "ProgressReporter":
        """Begin progress on the client's token, or (if `create` and the client supports
        it) on one the server creates; without either, reports are dropped.  `on_cancel`
        runs when the user cancels the progress (window/workDoneProgress/cancel): for a
        command already answered, that is the only way left to stop it."""
        if token is None and create and capabilities.work_done_progress(ls.client_capabilities):
            token = f"diffill-{uuid.uuid4().hex[:12]}"
            try:
                await ls.work_done_progress.create_async(token)
            except Exception:  # a client that refuses the token just gets no progress bar
                token = None
        reporter = cls(ls, token, title)
        if token is not None:
            ls.work_done_progress.begin(
                token, types.WorkDoneProgressBegin(title=title, cancellable=True, percentage=0)
            )
            cancelled = ls.work_done_progress.tokens.get(token)  # pygls cancels this future on the client's cancel
            if cancelled is not None and on_cancel is not None:
                cancelled.add_done_callback(lambda f: on_cancel() if f.cancelled() else None)
        return reporter

    def hook(self, fraction: float) -> None:
        """Progress callback for InfillRequest.progress; safe to call from any thread."""
        if self._token is None:
            return
        percent = max(0, min(100, int(fraction * 100)))
        if percent < self._last + 5 and percent != 100:
            return
        self._last = percent
        self._loop.call_soon_threadsafe(self._report, percent)

    def _report(self, percent: int) -> None:
        if self._token is not None:
            self._ls.work_done_progress.report(
                self._token, types.WorkDoneProgressReport(percentage=percent, message=f"{percent}% of the hole filled")
            )

    def end(self, message: str | None = None) -> None:
        if self._token is not None:
            self._ls.work_done_progress.end(self._token, types.WorkDoneProgressEnd(message=message))
            # pygls keeps a future per token for good: one per inline request would grow forever.
            self._ls.work_done_progress.tokens.pop(self._token, None)
            self._token = None
