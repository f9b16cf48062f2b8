"""The server's state, and how model work is run for a request.

`DiffillServer` holds what outlives a request — the open documents, the settings, the
model worker, the suggestion cache, the in-flight requests, the hint scheduler — and runs
the features on the model with cancellation, progress and a staleness check.  The LSP
handlers in server.py translate between LSP and the calls here.

The `diffill/status` notification (see `send_status`) is the server's one custom message:
{"state": "loading" | "ready" | "busy" | "error" | "disabled", "model": name,
"isRandom": bool, "message"?: why}; editors show it in their status line.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any, BinaryIO, Callable, NoReturn, TypeVar

from lsprotocol import types
from pygls.exceptions import JsonRpcContentModified
from pygls.lsp.server import LanguageServer

from infill_engine.request import InfillCancelled, InfillError
from infill_engine.syntax.parse import Code

from . import capabilities
from .documents import Document, DocumentStore
from .features.actions import Action
from .features.context import ActionError, Edit, Hooks
from .features.inline import Suggestion, complete_inline
from .hints import HintScheduler
from .model_worker import EngineUnavailable, ModelWorker, model_label
from .progress import ProgressReporter
from .protocol import DiffillProtocol, serve_stdio
from .settings import Settings, merge_settings
from .suggestion_cache import SuggestionCache

log = logging.getLogger(__name__)

T = TypeVar("T")

VERSION = "0.1.0"
STATUS_NOTIFICATION = "diffill/status"


class DiffillServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("diffill", VERSION, protocol_cls=DiffillProtocol,
                         text_document_sync_kind=types.TextDocumentSyncKind.Incremental)
        self.documents = DocumentStore()
        self.settings = Settings()
        self.worker = ModelWorker(on_state=self._engine_state_changed)
        self.cache = SuggestionCache()
        self.hints = HintScheduler(self)
        self.cancel_events: dict[Any, threading.Event] = {}  # request id -> its model cancel flag
        self.inline_inflight: dict[str, threading.Event] = {}  # uri -> newest inline request's flag
        self.engine_state = "loading"  # loading | ready | error: the model's own state
        self.busy = 0  # code actions running on the model right now
        self.state_message: str | None = None
        self.client_initialized = False  # `initialized` arrived: notifications may be sent
        self._logged_reasons: set[str] = set()

    def start_io(self, stdin: BinaryIO, stdout: BinaryIO) -> NoReturn:
        """Serve over stdio with diffill's loop (protocol.serve_stdio), which recovers from bad
        frames and ends the process promptly; pygls' own loop does neither."""
        serve_stdio(self.protocol, stdin, stdout)

    # -- messages to the user ------------------------------------------------------------

    def log(self, message: str, level: types.MessageType = types.MessageType.Info) -> None:
        log.log(logging.WARNING if level <= types.MessageType.Warning else logging.INFO, message)
        self.window_log_message(types.LogMessageParams(type=level, message=f"diffill: {message}"))

    def log_once(self, message: str, level: types.MessageType = types.MessageType.Info) -> None:
        if message not in self._logged_reasons:
            self._logged_reasons.add(message)
            self.log(message, level)

    def show(self, message: str, level: types.MessageType = types.MessageType.Warning) -> None:
        log.warning(message)
        self.window_show_message(types.ShowMessageParams(type=level, message=f"diffill: {message}"))

    def status(self) -> dict[str, Any]:
        engine = self.worker.engine
        return {
            "enabled": self.settings.enabled,
            "model": engine.name if engine is not None else model_label(self.settings),
            "device": self.settings.device,
            "isRandom": engine is not None and engine.is_random,
            "state": self.state,
        }

    @property
    def state(self) -> str:
        if not self.settings.enabled:
            return "disabled"
        if self.busy and self.engine_state == "ready":
            return "busy"
        return self.engine_state

    def _engine_state_changed(self, state: str, message: str | None) -> None:
        self.engine_state, self.state_message = state, message
        self.send_status()
        if state == "error" and message:
            self.show(message, types.MessageType.Error)

    def send_status(self) -> None:
        if not self.client_initialized:
            return  # `initialized` sends the state as it is then
        status = self.status()
        payload = {"state": status["state"], "model": status["model"], "isRandom": status["isRandom"]}
        if self.state_message:
            payload["message"] = self.state_message
        self.protocol.notify(STATUS_NOTIFICATION, payload)

    # -- settings ------------------------------------------------------------------------

    def apply_settings(self, raw: Any) -> None:
        new, problems = merge_settings(self.settings, raw)
        for problem in problems:
            self.show(problem)
        old, self.settings = self.settings, new
        if (old.engine_key(), old.infill) != (new.engine_key(), new.infill):
            self.cache.clear()  # suggestions from another model or sampler are not this one's
        if old.enabled != new.enabled:
            self.send_status()
        if new.enabled and old.engine_key() != new.engine_key() and self.worker.engine is not None:
            self.preload()
        if old.features.unlikely_hints and not new.features.unlikely_hints:
            self.hints.clear()

    def preload(self) -> None:
        """Start loading the engine in the background so the first suggestion is quick."""
        if not self.settings.enabled:
            return

        async def load() -> None:
            try:
                await self.worker.ensure_engine(self.settings)
            except EngineUnavailable:
                pass  # already reported through the status notification

        asyncio.ensure_future(load())

    # -- running model work --------------------------------------------------------------

    def feature_on(self, name: str) -> bool:
        return self.settings.enabled and getattr(self.settings.features, name)

    def usable(self, doc: Document) -> bool:
        reason = doc.unsupported_reason()
        if reason is not None:
            self.log_once(reason)
            return False
        return True

    def is_current(self, uri: str, version: int) -> bool:
        """The document is still open at `version` (results computed for it still fit)."""
        return uri in self.documents and self.documents.get(uri).version == version

    def request_cancel_event(self) -> tuple[Any, threading.Event]:
        """A cancel flag for the request being handled, set by its $/cancelRequest."""
        msg_id = self.protocol.msg_id
        event = threading.Event()
        if msg_id is not None:
            self.cancel_events[msg_id] = event
        return msg_id, event

    def cancel_all(self) -> None:
        """Stop every running model call at its next step."""
        for event in list(self.cancel_events.values()) + list(self.inline_inflight.values()):
            event.set()

    async def run_model(self, fn: Callable[..., T], *args: Any, cancel: threading.Event, msg_id: Any = None) -> T:
        """fn(engine, *args) on the model thread (ModelWorker.run)."""
        try:
            return await self.worker.run(fn, *args, settings=self.settings, cancel=cancel)
        finally:
            if msg_id is not None:
                self.cancel_events.pop(msg_id, None)

    # -- inline completion ---------------------------------------------------------------

    async def suggest_inline(self, doc: Document, position: types.Position,
                             token: types.ProgressToken | None) -> list[Suggestion]:
        """Suggestions at `position`, from the cache or the model; [] when there is nothing
        to offer (unsupported document, superseded, engine error, document moved on)."""
        if not self.usable(doc):
            return []
        offset, code, version = doc.offset_at(position), doc.code, doc.version
        cached = self.cache.get(doc.uri, code.text, offset)
        if cached:
            return cached
        suggestions = await self._complete_on_model(doc.uri, code, offset, token)
        self.cache.put(doc.uri, code.text, offset, suggestions)
        # The document may have moved on while the model ran: then these ranges are stale.
        return suggestions if self.is_current(doc.uri, version) else []

    async def _complete_on_model(self, uri: str, code: Code, offset: int,
                                 token: types.ProgressToken | None) -> list[Suggestion]:
        msg_id, event = self._supersede_inline(uri)
        progress = await ProgressReporter.start(self, token, "diffill: completing", create=False)
        try:
            return await self.run_model(complete_inline, code, offset, self.settings.infill,
                                        Hooks(cancel=event.is_set, progress=progress.hook),
                                        cancel=event, msg_id=msg_id)
        except InfillCancelled:
            log.debug("inline request for %s superseded", uri)
        except EngineUnavailable as exc:
            self.log_once(str(exc), types.MessageType.Warning)  # the status already says "error"
        except InfillError as exc:
            self.log(str(exc), types.MessageType.Warning)
        finally:
            progress.end()
            if self.inline_inflight.get(uri) is event:
                del self.inline_inflight[uri]
            self.hints.schedule(uri)
        return []

    def _supersede_inline(self, uri: str) -> tuple[Any, threading.Event]:
        """This request's cancel flag; the older inline request for `uri`, if any, is cancelled
        (the newer keystroke supersedes it), and so are pending hints."""
        self.hints.pause(uri)
        previous = self.inline_inflight.get(uri)
        if previous is not None:
            previous.set()
        msg_id, event = self.request_cancel_event()
        self.inline_inflight[uri] = event
        return msg_id, event

    # -- code actions --------------------------------------------------------------------

    async def run_action(self, action: Action, doc: Document, start: int, end: int,
                         token: types.ProgressToken | None,
                         cancel: tuple[Any, threading.Event] | None = None) -> list[Edit] | None:
        """A code action's edits, computed on the model with progress and cancellation and
        within the action bounds (Settings.action_*); None (after telling the user why) when
        it does not apply or ran out of time.  `cancel` is the request's (id, flag) when the
        caller took it already.  Raises ContentModified when the document changed meanwhile."""
        if not self.usable(doc):
            return None
        code, version = doc.code, doc.version
        msg_id, event = cancel or self.request_cancel_event()
        settings = self.settings
        deadline = time.monotonic() + settings.action_timeout_ms / 1000

        def stop() -> bool:
            return event.is_set() or time.monotonic() > deadline

        progress = await ProgressReporter.start(self, token, f"diffill: {action.kind}", create=True,
                                                on_cancel=event.set)
        self.busy += 1
        self.send_status()
        try:
            edits = await self.run_model(action.run, code, start, end, settings.action_infill,
                                         Hooks(cancel=stop, progress=progress.hook,
                                               max_tokens=settings.action_max_tokens),
                                         cancel=event, msg_id=msg_id)
        except ActionError as exc:
            self.show(str(exc), types.MessageType.Info)
            return None
        except (InfillError, EngineUnavailable) as exc:
            self.show(str(exc))
            return None
        except InfillCancelled:
            if not event.is_set():  # the deadline, not the user
                self.show(f"{action.kind} stopped after {settings.action_timeout_ms / 1000:g} s "
                          "(diffill.actionTimeoutMs): select less, or raise the limit")
            log.debug("%s cancelled", action.kind)
            return None
        finally:
            progress.end()
            self.busy -= 1
            self.send_status()
        if not self.is_current(doc.uri, version):
            raise JsonRpcContentModified(f"{doc.uri} changed while diffill was working; try again")
        return edits

    # -- edits back to the client --------------------------------------------------------

    def workspace_edit(self, doc: Document, edits: list[Edit]) -> types.WorkspaceEdit:
        text_edits = [types.TextEdit(range=doc.range_of(e.start, e.end), new_text=e.new_text) for e in edits]
        if capabilities.versioned_edits(self.client_capabilities):
            # Versioned: a client whose document moved on rejects the edit instead of
            # applying it to the wrong text.
            return types.WorkspaceEdit(document_changes=[
                types.TextDocumentEdit(
                    text_document=types.OptionalVersionedTextDocumentIdentifier(uri=doc.uri, version=doc.version),
                    edits=text_edits,
                )
            ])
        return types.WorkspaceEdit(changes={doc.uri: text_edits})

    def apply_edit(self, label: str, edit: types.WorkspaceEdit) -> None:
        def applied(result: types.ApplyWorkspaceEditResult | None) -> None:
            if result is not None and not result.applied:
                self.log(f"the editor did not apply {label}: {result.failure_reason or 'no reason given'}",
                         types.MessageType.Warning)

        # Not awaited: the command answers at once, the client applies the edit when it can.
        future = self.protocol.send_request(types.WORKSPACE_APPLY_EDIT,
                                            types.ApplyWorkspaceEditParams(edit=edit, label=label))
        future.add_done_callback(lambda f: applied(f.result()) if not f.cancelled() and f.exception() is None else None)
