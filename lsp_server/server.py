"""diffill's language server: one decorated handler per LSP method.

Handlers translate LSP types into calls to `actions` (plain Python over text and str
offsets) and back.  State that outlives a request — documents, settings, the model
worker, the suggestion cache, in-flight inline requests — lives on `DiffillServer`
(diffill_server.py).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcContentModified, JsonRpcInvalidParams

from infill_engine.request import InfillCancelled, InfillError

from . import actions
from .diffill_server import DiffillServer, InlineOutcome
from .documents import Document, DocumentError
from .model_worker import EngineUnavailable
from .settings import settings_section

log = logging.getLogger(__name__)

server = DiffillServer()


# == lifecycle and configuration =========================================================


@server.feature(types.INITIALIZE)
def initialize(ls: DiffillServer, params: types.InitializeParams) -> None:
    ls.documents.encoding = ls.workspace.position_encoding or types.PositionEncodingKind.Utf16
    ls.apply_settings(settings_section(params.initialization_options))
    if _client_has_inline_completion(params.capabilities):
        # Completion is the fallback for clients without inline completion.  A client with
        # both would run the model twice per keystroke and show every suggestion twice,
        # so it is not offered completion at all (pygls computes the advertised
        # capabilities after this handler, from the registered features).
        ls.protocol.fm.features.pop(types.TEXT_DOCUMENT_COMPLETION, None)


def _client_has_inline_completion(caps: types.ClientCapabilities) -> bool:
    return caps.text_document is not None and caps.text_document.inline_completion is not None


@server.feature(types.INITIALIZED)
def initialized(ls: DiffillServer, params: types.InitializedParams) -> None:
    ls.send_status()
    ls.preload()


@server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
def did_change_configuration(ls: DiffillServer, params: types.DidChangeConfigurationParams) -> None:
    raw = settings_section(params.settings)
    if raw is not None or not _client_pulls_configuration(ls):
        ls.apply_settings(raw)
        return

    # Clients on the pull model send an empty notification and expect us to ask.
    async def pull() -> None:
        result = await ls.workspace_configuration_async(
            types.ConfigurationParams(items=[types.ConfigurationItem(section="diffill")])
        )
        ls.apply_settings(result[0] if result else None)

    asyncio.ensure_future(pull())


def _client_pulls_configuration(ls: DiffillServer) -> bool:
    ws = ls.client_capabilities.workspace
    return bool(ws is not None and ws.configuration)


@server.feature(types.SHUTDOWN)
def shutdown(ls: DiffillServer, params: None) -> None:
    for event in list(ls.cancel_events.values()) + list(ls.inline_inflight.values()):
        event.set()
    for task in ls.hint_tasks.values():
        task.cancel()


@server.feature(types.EXIT)
def exit_(ls: DiffillServer, params: None) -> None:
    # Also without a `shutdown` first: stop a running model call at its next step, so the
    # process does not wait for it before exiting.
    for event in list(ls.cancel_events.values()) + list(ls.inline_inflight.values()):
        event.set()
    ls.worker.shutdown()


# == document sync =======================================================================


@server.feature(types.TEXT_DOCUMENT_DID_OPEN)
def did_open(ls: DiffillServer, params: types.DidOpenTextDocumentParams) -> None:
    doc = ls.documents.open(params.text_document)
    ls.usable(doc)  # says once, in the log, why a document gets no suggestions
    ls.schedule_hints(doc.uri)


@server.feature(types.TEXT_DOCUMENT_DID_CHANGE)
def did_change(ls: DiffillServer, params: types.DidChangeTextDocumentParams) -> None:
    uri = params.text_document.uri
    if uri in ls.documents and params.text_document.version <= ls.documents.get(uri).version:
        ls.log(f"{uri}: version {params.text_document.version} arrived after version "
               f"{ls.documents.get(uri).version}; applying it anyway", types.MessageType.Warning)
    try:
        doc = ls.documents.change(params)
    except DocumentError as exc:
        ls.log(f"ignoring a change: {exc}", types.MessageType.Warning)
        return
    last = params.content_changes[-1] if params.content_changes else None
    around = None
    if last is not None and getattr(last, "range", None) is not None:
        around = doc.offset_at(last.range.start, clamp=True)
    ls.schedule_hints(uri, around)


@server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
def did_close(ls: DiffillServer, params: types.DidCloseTextDocumentParams) -> None:
    uri = params.text_document.uri
    ls.clear_hints(uri)
    ls.documents.close(uri)
    ls.cache.clear(uri)
    if (event := ls.inline_inflight.pop(uri, None)) is not None:
        event.set()


# == completions =========================================================================


@server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
async def inline_completion(ls: DiffillServer, params: types.InlineCompletionParams) -> types.InlineCompletionList:
    items: list[types.InlineCompletionItem] = []
    if ls.feature_on("inline_completion"):
        outcome = await _inline_or_none(ls, params.text_document.uri, params.position, params.work_done_token)
        for s in outcome.suggestions if outcome else []:
            items.append(types.InlineCompletionItem(insert_text=s.text, range=outcome.doc.range_of(s.start, s.end)))
    return types.InlineCompletionList(items=items)


@server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(resolve_provider=False))
async def completion(ls: DiffillServer, params: types.CompletionParams) -> types.CompletionList:
    items: list[types.CompletionItem] = []
    if ls.feature_on("completion"):
        outcome = await _inline_or_none(ls, params.text_document.uri, params.position, params.work_done_token)
        random_note = " (untrained weights)" if getattr(ls.worker.engine, "is_random", False) else ""
        for rank, s in enumerate(outcome.suggestions if outcome else []):
            first_line = s.text.strip().splitlines()[0] if s.text.strip() else s.text
            items.append(types.CompletionItem(
                label=first_line[:80] or "(blank)",
                kind=types.CompletionItemKind.Snippet,
                detail=f"diffill{random_note}",
                documentation=s.text,
                sort_text=f"0{rank:02d}",
                filter_text=s.text,
                preselect=rank == 0,
                insert_text_format=types.InsertTextFormat.PlainText,
                text_edit=types.TextEdit(range=outcome.doc.range_of(s.start, s.end), new_text=s.text),
            ))
    # Incomplete: the answer depends on every character typed, so ask again.
    return types.CompletionList(is_incomplete=True, items=items)


async def _inline_or_none(ls: DiffillServer, uri: str, position: types.Position,
                          token: types.ProgressToken | None) -> InlineOutcome | None:
    try:
        return await ls.inline(uri, position, token)
    except DocumentError as exc:
        ls.log(str(exc), types.MessageType.Warning)
        return None


# == code actions ========================================================================

REWRITE, FILL_BODY, REPAIR, SUGGEST_NAME = actions.REWRITE, actions.FILL_BODY, actions.REPAIR, actions.SUGGEST_NAME
_ACTION_KINDS = {
    REWRITE: types.CodeActionKind.RefactorRewrite,
    FILL_BODY: types.CodeActionKind.RefactorRewrite,
    REPAIR: types.CodeActionKind.QuickFix,
    SUGGEST_NAME: types.CodeActionKind.RefactorRewrite,
}
_ACTION_FEATURES = {REWRITE: "rewrite", FILL_BODY: "fill_body", REPAIR: "repair", SUGGEST_NAME: "suggest_name"}


@server.feature(
    types.TEXT_DOCUMENT_CODE_ACTION,
    types.CodeActionOptions(
        code_action_kinds=[types.CodeActionKind.RefactorRewrite, types.CodeActionKind.QuickFix],
        resolve_provider=True,
    ),
)
def code_action(ls: DiffillServer, params: types.CodeActionParams) -> list[types.CodeAction]:
    try:
        doc = ls.documents.get(params.text_document.uri)
        start, end = doc.range_offsets(params.range)
    except DocumentError as exc:
        ls.log(str(exc), types.MessageType.Warning)
        return []
    if not ls.settings.enabled or not ls.usable(doc):
        return []
    offered = actions.available_actions(doc.text, doc.language, start, end)
    only = params.context.only if params.context else None
    literal, resolvable = _code_action_support(ls)
    out: list[types.CodeAction | types.Command] = []
    for kind, title in offered:
        lsp_kind = _ACTION_KINDS[kind]
        if not ls.feature_on(_ACTION_FEATURES[kind]):
            continue
        if only and not any(lsp_kind == o or lsp_kind.startswith(f"{o}.") for o in only):
            continue
        if literal and resolvable:
            # Lazy: the model runs only when the user picks the action (codeAction/resolve).
            out.append(types.CodeAction(
                title=title, kind=lsp_kind,
                data={"uri": doc.uri, "version": doc.version, "action": kind, "start": start, "end": end},
            ))
            continue
        # A client that cannot resolve edits lazily gets the command that computes and
        # applies the edit (workspace/applyEdit) instead of an eager model run per request.
        command = _action_command(ls, kind, title, doc, params.range)
        out.append(types.CodeAction(title=title, kind=lsp_kind, command=command) if literal else command)
    return out


def _code_action_support(ls: DiffillServer) -> tuple[bool, bool]:
    """(client takes CodeAction literals, client resolves their `edit` lazily)."""
    td = ls.client_capabilities.text_document
    ca = td.code_action if td is not None else None
    if ca is None:
        return False, False
    resolve = ca.resolve_support is not None and "edit" in (ca.resolve_support.properties or [])
    return ca.code_action_literal_support is not None, resolve


_COMMANDS = {
    REWRITE: "diffill.rewriteSelection", FILL_BODY: "diffill.fillBody",
    REPAIR: "diffill.repair", SUGGEST_NAME: "diffill.suggestName",
}


def _action_command(ls: DiffillServer, kind: str, title: str, doc: Document, rng: types.Range) -> types.Command:
    where = rng if kind in (REWRITE, REPAIR) else rng.start
    return types.Command(title=title, command=_COMMANDS[kind],
                         arguments=[doc.uri, ls.protocol._converter.unstructure(where)])


@server.feature(types.CODE_ACTION_RESOLVE)
async def code_action_resolve(ls: DiffillServer, action: types.CodeAction) -> types.CodeAction:
    data = action.data if isinstance(action.data, dict) else {}
    try:
        uri, version, kind = data["uri"], data["version"], data["action"]
        start, end = int(data["start"]), int(data["end"])
        if kind not in _ACTION_KINDS:
            raise KeyError(kind)
    except (KeyError, TypeError, ValueError) as exc:
        raise JsonRpcInvalidParams(f"not a diffill code action (bad data: {exc})") from None
    try:
        doc = ls.documents.get(uri, version)
    except DocumentError as exc:
        raise JsonRpcContentModified(str(exc)) from None
    if not 0 <= start <= end <= len(doc.text):
        raise JsonRpcInvalidParams("code action range is outside the document")
    edits = await _run_action(ls, kind, doc, start, end, token=None)
    if edits is not None:
        action.edit = ls.workspace_edit(doc, edits)
    return action


async def _run_action(ls: DiffillServer, kind: str, doc: Document, start: int, end: int,
                      token: types.ProgressToken | None) -> list[actions.Edit] | None:
    """Compute a code action's edits; None (after telling the user why) if it does not apply."""
    if not ls.usable(doc):
        return None
    s, text, language = ls.settings, doc.text, doc.language
    jobs = {
        REWRITE: lambda engine, hooks: [actions.rewrite(
            engine, text, language, start, end, max_tokens=s.max_hole_tokens, candidates=s.candidates,
            threshold=s.threshold, hooks=hooks)],
        FILL_BODY: lambda engine, hooks: [actions.fill_body(
            engine, text, language, start, max_tokens=s.max_hole_tokens, candidates=s.candidates,
            threshold=s.threshold, hooks=hooks)],
        REPAIR: lambda engine, hooks: [actions.repair(engine, text, language, start, end, threshold=s.threshold)],
        SUGGEST_NAME: lambda engine, hooks: actions.suggest_name(
            engine, text, language, start, candidates=max(4, s.candidates), threshold=s.threshold, hooks=hooks),
    }
    try:
        return await ls.action_edit(kind, doc, jobs[kind], token)
    except actions.ActionError as exc:
        ls.show(str(exc), types.MessageType.Info)
    except (InfillError, EngineUnavailable) as exc:
        ls.show(str(exc))
    except InfillCancelled:
        log.debug("%s cancelled", kind)
    return None


# == rename ==============================================================================


@server.feature(types.TEXT_DOCUMENT_PREPARE_RENAME)
def prepare_rename(ls: DiffillServer, params: types.PrepareRenameParams) -> types.PrepareRenamePlaceholder | None:
    try:
        doc = ls.documents.get(params.text_document.uri)
        offset = doc.offset_at(params.position)
    except DocumentError as exc:
        ls.log(str(exc), types.MessageType.Warning)
        return None
    if not ls.feature_on("rename") or not ls.usable(doc):
        return None
    span = actions.prepare_rename(doc.text, doc.language, offset)
    if span is None:
        return None
    return types.PrepareRenamePlaceholder(range=doc.range_of(*span), placeholder=doc.text[span[0] : span[1]])


@server.feature(types.TEXT_DOCUMENT_RENAME)
def rename(ls: DiffillServer, params: types.RenameParams) -> types.WorkspaceEdit | None:
    try:
        doc = ls.documents.get(params.text_document.uri)
        offset = doc.offset_at(params.position)
    except DocumentError as exc:
        ls.log(str(exc), types.MessageType.Warning)
        return None
    if not ls.feature_on("rename") or not ls.usable(doc):
        return None
    try:
        edits = actions.rename(doc.text, doc.language, offset, params.new_name)
    except actions.ActionError as exc:
        raise JsonRpcInvalidParams(str(exc)) from None
    return ls.workspace_edit(doc, edits)


# == commands ============================================================================


def _command_target(ls: DiffillServer, args: tuple, want: type) -> tuple[Document, Any]:
    """[uri, range|position] from executeCommand arguments, checked."""
    if len(args) != 2 or not isinstance(args[0], str):
        raise JsonRpcInvalidParams(f"expected [uri, {want.__name__.lower()}], got {list(args)!r}")
    try:
        where = ls.protocol._converter.structure(args[1], want)
    except Exception:
        raise JsonRpcInvalidParams(f"argument 2 is not an LSP {want.__name__}: {args[1]!r}") from None
    try:
        return ls.documents.get(args[0]), where
    except DocumentError as exc:
        raise JsonRpcInvalidParams(str(exc)) from None


async def _command_action(ls: DiffillServer, kind: str, args: tuple, want: type) -> None:
    doc, where = _command_target(ls, args, want)
    if not ls.feature_on(_ACTION_FEATURES[kind]):
        ls.show(f"{kind} is switched off (diffill.features)", types.MessageType.Info)
        return None
    try:
        start, end = doc.range_offsets(where) if want is types.Range else (doc.offset_at(where),) * 2
    except DocumentError as exc:
        raise JsonRpcInvalidParams(str(exc)) from None
    edits = await _run_action(ls, kind, doc, start, end, token=None)
    if edits is not None:
        ls.apply_edit(f"diffill: {kind}", ls.workspace_edit(doc, edits))
    return None


@server.command("diffill.rewriteSelection")
async def cmd_rewrite(ls: DiffillServer, *args: Any) -> None:
    return await _command_action(ls, REWRITE, args, types.Range)


@server.command("diffill.fillBody")
async def cmd_fill_body(ls: DiffillServer, *args: Any) -> None:
    return await _command_action(ls, FILL_BODY, args, types.Position)


@server.command("diffill.repair")
async def cmd_repair(ls: DiffillServer, *args: Any) -> None:
    return await _command_action(ls, REPAIR, args, types.Range)


@server.command("diffill.suggestName")
async def cmd_suggest_name(ls: DiffillServer, *args: Any) -> None:
    return await _command_action(ls, SUGGEST_NAME, args, types.Position)


@server.command("diffill.toggle")
def cmd_toggle(ls: DiffillServer, *args: Any) -> dict[str, bool]:
    if len(args) > 1 or (args and not isinstance(args[0], bool)):
        raise JsonRpcInvalidParams(f"diffill.toggle takes [] or [true|false], got {list(args)!r}")
    ls.apply_settings({"enabled": args[0] if args else not ls.settings.enabled})
    if ls.settings.enabled:
        ls.worker.forget_failure()  # switching off and on is how a user says "try again"
        ls.preload()
    return {"enabled": ls.settings.enabled}


@server.command("diffill.status")
def cmd_status(ls: DiffillServer, *args: Any) -> dict[str, Any]:
    return ls.status()
