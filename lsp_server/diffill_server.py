"""The server object: what outlives a request, and how model work is run.

`DiffillServer` holds the open documents, the settings, the model worker, the
suggestion cache and the in-flight requests, and knows how to run a model job with
cancellation, progress and staleness checks.  The LSP handlers in server.py are thin
wrappers around it and around `actions`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from typing import Any, Callable

from lsprotocol import types
from pygls.exceptions import JsonRpcContentModified, JsonRpcException, JsonRpcInvalidParams
from pygls.lsp.server import LanguageServer
from pygls.protocol import LanguageServerProtocol

from infill_engine.request import InfillCancelled, InfillError

from . import actions
from .documents import Document, DocumentStore
from .model_worker import EngineUnavailable, ModelWorker, model_label
from .progress import ProgressReporter
from .settings import Settings, merge_settings
from .suggestion_cache import Entry, SuggestionCache

log = logging.getLogger(__name__)

VERSION = "0.1.0"
STATUS_NOTIFICATION = "diffill/status"
HINT_MIN_DELAY_S = 0.5  # hints run the model over a whole window: wait for a pause in typing
HINT_WINDOW_LINES = 40


class _Malformed:
    """Stands in for a message whose params did not match the LSP schema (already answered)."""


class DiffillProtocol(LanguageServerProtocol):
    """pygls' protocol with three changes:

    - document sync goes to our DocumentStore only (it keeps tree-sitter trees in step);
      pygls' own workspace copy of every document is skipped;
    - a request whose params do not match the schema gets an InvalidParams *response*
      (pygls only logs it, which leaves the client waiting forever);
    - `$/cancelRequest` also sets the request's cancel event, which stops the model at
      its next step even when pygls cannot cancel the task itself (executeCommand).
    """

    _server: "DiffillServer"

    # Blanked out so pygls does not register its built-in handlers for these methods:
    # the user handlers registered below then receive didOpen/didChange/didClose directly.
    lsp_text_document__did_open = None
    lsp_text_document__did_change = None
    lsp_text_document__did_close = None

    def structure_message(self, data: dict[str, Any]):
        try:
            return super().structure_message(data)
        except JsonRpcException as exc:
            method = data.get("method", "?")
            cause = exc.__cause__ or exc
            message = f"malformed {method} message: {str(cause).splitlines()[0] if str(cause) else type(cause).__name__}"
            log.warning(message)
            if "id" in data and "method" in data:
                self._send_response(
                    data["id"], error=types.ResponseError(code=JsonRpcInvalidParams.CODE, message=message)
                )
            try:
                self._server.log(message, types.MessageType.Warning)
            except Exception:  # logging must never take the server down
                pass
            return _Malformed()

    def handle_message(self, message):
        if isinstance(message, _Malformed):
            return
        return super().handle_message(message)

    def _handle_cancel_notification(self, msg_id):
        event = self._server.cancel_events.get(msg_id)
        if event is not None:
            event.set()
        return super()._handle_cancel_notification(msg_id)


@dataclass
class InlineOutcome:
    doc: Document
    offset: int
    suggestions: list[actions.InlineSuggestion]


class DiffillServer(LanguageServer):
    def __init__(self) -> None:
        super().__init__("diffill", VERSION, protocol_cls=DiffillProtocol,
                         text_document_sync_kind=types.TextDocumentSyncKind.Incremental)
        self.documents = DocumentStore()
        self.settings = Settings()
        self.worker = ModelWorker(on_state=self._engine_state_changed)
        self.cache = SuggestionCache()
        self.cancel_events: dict[Any, threading.Event] = {}  # request id -> its model cancel flag
        self.inline_inflight: dict[str, threading.Event] = {}  # uri -> newest inline request's flag
        self.hint_tasks: dict[str, asyncio.Task] = {}
        self.hinted: set[str] = set()  # documents with hint diagnostics published
        self.engine_state = "loading"  # loading | ready | error: the model's own state
        self.busy = 0  # code actions running on the model right now
        self.state_message: str | None = None
        self._logged_reasons: set[str] = set()

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
            "model": getattr(engine, "name", None) or model_label(self.settings),
            "device": self.settings.device,
            "isRandom": bool(getattr(engine, "is_random", False)),
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
        if (old.engine_key(), old.threshold, old.candidates, old.max_hole_tokens) != (
            new.engine_key(), new.threshold, new.candidates, new.max_hole_tokens
        ):
            self.cache.clear()  # suggestions from another model or sampler are not this one's
        if old.enabled != new.enabled:
            self.send_status()
        if new.enabled and old.engine_key() != new.engine_key() and self.worker.engine is not None:
            self.preload()
        if old.features.unlikely_hints and not new.features.unlikely_hints:
            self.clear_hints()

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

    # -- model calls ---------------------------------------------------------------------

    def feature_on(self, name: str) -> bool:
        return self.settings.enabled and getattr(self.settings.features, name)

    def usable(self, doc: Document) -> bool:
        reason = doc.unsupported_reason()
        if reason is not None:
            self.log_once(reason)
            return False
        return True

    def request_cancel_event(self) -> tuple[Any, threading.Event]:
        msg_id = self.protocol.msg_id
        event = threading.Event()
        if msg_id is not None:
            self.cancel_events[msg_id] = event
        return msg_id, event

    async def run_model(self, job: Callable[[Any], Any], event: threading.Event, msg_id: Any = None) -> Any:
        try:
            return await self.worker.run(self.settings, job, event)
        finally:
            if msg_id is not None:
                self.cancel_events.pop(msg_id, None)

    async def inline(self, uri: str, position: types.Position, token: types.ProgressToken | None) -> InlineOutcome | None:
        """Suggestions at `position`, from the cache or the model.  None when there is
        nothing to offer (unknown document, feature off, superseded, engine error)."""
        doc = self.documents.get(uri)
        if not self.usable(doc):
            return None
        offset = doc.offset_at(position)
        text, version = doc.text, doc.version
        hit = self.cache.get(uri, text, offset)
        if hit is not None and hit.entries:
            return InlineOutcome(doc, offset, [
                actions.InlineSuggestion(offset, offset + e.replaces, e.text, True, 0.0) for e in hit.entries
            ])
        self.pause_hints(uri)
        previous = self.inline_inflight.get(uri)
        if previous is not None:
            previous.set()  # a newer request for this document supersedes the older one
        msg_id, event = self.request_cancel_event()
        self.inline_inflight[uri] = event
        progress = await ProgressReporter.start(self, token, "diffill: completing", create=False)
        s = self.settings
        language = doc.language

        def job(engine) -> list[actions.InlineSuggestion]:
            return actions.complete_inline(
                engine, text, offset, language, max_tokens=s.max_hole_tokens, candidates=s.candidates,
                threshold=s.threshold, hooks=actions.Hooks(cancel=event.is_set, progress=progress.hook),
            )

        try:
            suggestions = await self.run_model(job, event, msg_id)
        except InfillCancelled:
            log.debug("inline request for %s superseded", uri)
            return None
        except EngineUnavailable as exc:
            self.log_once(str(exc), types.MessageType.Warning)  # the status already says "error"
            return None
        except InfillError as exc:
            self.log(str(exc), types.MessageType.Warning)
            return None
        finally:
            progress.end()
            if self.inline_inflight.get(uri) is event:
                del self.inline_inflight[uri]
            self.schedule_hints(uri)
        self.cache.put(uri, text, offset, [
            Entry(sg.text, sg.end - offset) for sg in suggestions if sg.start == offset
        ])
        if uri not in self.documents or self.documents.get(uri).version != version:
            return None  # the document moved on while the model ran: these ranges are stale
        return InlineOutcome(doc, offset, suggestions)

    async def action_edit(self, title: str, doc: Document, job: Callable[[Any, actions.Hooks], list[actions.Edit]],
                          token: types.ProgressToken | None = None) -> list[actions.Edit]:
        """Run a code action's model job with progress, cancellation and a staleness check."""
        version = doc.version
        msg_id, event = self.request_cancel_event()
        progress = await ProgressReporter.start(self, token, f"diffill: {title}", create=True)
        self.busy += 1
        self.send_status()
        try:
            edits = await self.run_model(
                lambda engine: job(engine, actions.Hooks(cancel=event.is_set, progress=progress.hook)), event, msg_id
            )
        finally:
            progress.end()
            self.busy -= 1
            self.send_status()
        if doc.uri not in self.documents or self.documents.get(doc.uri).version != version:
            raise JsonRpcContentModified(f"{doc.uri} changed while diffill was working; try again")
        return edits

    # -- unlikely-code hints -------------------------------------------------------------

    def schedule_hints(self, uri: str, around: int | None = None) -> None:
        if not self.feature_on("unlikely_hints") or uri not in self.documents:
            return
        old = self.hint_tasks.pop(uri, None)
        if old is not None:
            old.cancel()
        self.hint_tasks[uri] = asyncio.ensure_future(self._hints_after_pause(uri, around))

    def pause_hints(self, uri: str) -> None:
        task = self.hint_tasks.pop(uri, None)
        if task is not None:
            task.cancel()

    async def _hints_after_pause(self, uri: str, around: int | None) -> None:
        await asyncio.sleep(max(HINT_MIN_DELAY_S, self.settings.debounce_ms / 1000))
        if uri not in self.documents:
            return
        doc = self.documents.get(uri)
        if not self.usable(doc):
            return
        text, version = doc.text, doc.version
        line = doc.position_at(around).line if around is not None else 0
        first = max(0, line - HINT_WINDOW_LINES // 2)
        last = min(len(doc.line_starts) - 1, first + HINT_WINDOW_LINES)
        start, end = doc.line_starts[first], doc.line_bounds(last)[1]
        event = threading.Event()
        try:
            hints = await self.run_model(lambda engine: actions.unlikely_hints(engine, text, start, end), event)
        except (InfillError, InfillCancelled, EngineUnavailable) as exc:
            log.debug("hints skipped: %s", exc)
            return
        if uri not in self.documents or self.documents.get(uri).version != version:
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
        self.hinted.add(uri)
        self.text_document_publish_diagnostics(
            types.PublishDiagnosticsParams(uri=uri, diagnostics=diagnostics, version=version)
        )

    def clear_hints(self, uri: str | None = None) -> None:
        for target in [uri] if uri else list(self.hinted):
            self.pause_hints(target)
            if target in self.hinted:
                self.hinted.discard(target)
                self.text_document_publish_diagnostics(types.PublishDiagnosticsParams(uri=target, diagnostics=[]))

    # -- edits back to the client --------------------------------------------------------

    def workspace_edit(self, doc: Document, edits: list[actions.Edit]) -> types.WorkspaceEdit:
        text_edits = [types.TextEdit(range=doc.range_of(e.start, e.end), new_text=e.new_text) for e in edits]
        ws = self.client_capabilities.workspace
        if ws is not None and ws.workspace_edit is not None and ws.workspace_edit.document_changes:
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
