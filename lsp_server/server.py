"""diffill's language server: one decorated handler per LSP method.

Each handler translates LSP types into plain calls — on the session (session.py: state
and model work) and on the features (features/: text and str offsets) — and the answers
back into LSP types.  Nothing else lives here.
"""

from __future__ import annotations

import asyncio
from typing import Any

from lsprotocol import types
from pygls.exceptions import JsonRpcContentModified, JsonRpcInvalidParams

from . import capabilities
from .documents import Document, DocumentError
from .features import naming
from .features.actions import ACTIONS, Action, available_actions
from .features.context import ActionError
from .features.inline import Suggestion
from .session import DiffillServer
from .settings import settings_section

server = DiffillServer()


# == lifecycle and configuration =========================================================


@server.feature(types.INITIALIZE)
def initialize(ls: DiffillServer, params: types.InitializeParams) -> None:
    ls.documents.encoding = ls.workspace.position_encoding or types.PositionEncodingKind.Utf16
    ls.apply_settings(settings_section(params.initialization_options))
    # Load now, not at `initialized`: the first suggestion is what the user waits for, and
    # the torch import alone can take seconds on a slow host.  (Status notifications wait
    # for `initialized`: nothing but the answer may precede it.)
    ls.preload()
    if capabilities.inline_completion(params.capabilities):
        # Completion is the fallback for clients without inline completion.  A client with
        # both would run the model twice per keystroke and show every suggestion twice,
        # so it is not offered completion at all (pygls computes the advertised
        # capabilities after this handler, from the registered features).
        ls.protocol.fm.features.pop(types.TEXT_DOCUMENT_COMPLETION, None)


@server.feature(types.INITIALIZED)
def initialized(ls: DiffillServer, params: types.InitializedParams) -> None:
    ls.client_initialized = True
    ls.send_status()


@server.feature(types.WORKSPACE_DID_CHANGE_CONFIGURATION)
def did_change_configuration(ls: DiffillServer, params: types.DidChangeConfigurationParams) -> None:
    raw = settings_section(params.settings)
    if raw is not None or not capabilities.pulls_configuration(ls.client_capabilities):
        ls.apply_settings(raw)
        return

    # Clients on the pull model send an empty notification and expect us to ask.
    async def pull() -> None:
        result = await ls.workspace_configuration_async(
            types.ConfigurationParams(items=[types.ConfigurationItem(section="diffill")])
        )
        ls.apply_settings(result[0] if result else None)

    asyncio.ensure_future(pull())


@server.feature(types.SHUTDOWN)
def shutdown(ls: DiffillServer, params: None) -> None:
    ls.cancel_all()
    ls.hints.cancel_all()


# `exit` is the protocol's (DiffillProtocol.lsp_exit): it ends the process at once, model work and all.


# == document sync =======================================================================


@server.feature(types.TEXT_DOCUMENT_DID_OPEN)
def did_open(ls: DiffillServer, params: types.DidOpenTextDocumentParams) -> None:
    doc = ls.documents.open(params.text_document)
    ls.usable(doc)  # says once, in the log, why a document gets no suggestions
    ls.hints.schedule(doc.uri)


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
    if isinstance(last, types.TextDocumentContentChangePartial):
        around = doc.offset_at(last.range.start, clamp=True)
    ls.hints.schedule(uri, around)


@server.feature(types.TEXT_DOCUMENT_DID_CLOSE)
def did_close(ls: DiffillServer, params: types.DidCloseTextDocumentParams) -> None:
    uri = params.text_document.uri
    ls.hints.clear(uri)
    ls.documents.close(uri)
    ls.cache.clear(uri)
    if (event := ls.inline_inflight.pop(uri, None)) is not None:
        event.set()


# == completions =========================================================================


@server.feature(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionOptions())
async def inline_completion(ls: DiffillServer, params: types.InlineCompletionParams) -> types.InlineCompletionList:
    items: list[types.InlineCompletionItem] = []
    if ls.feature_on("inline_completion"):
        doc, suggestions = await _suggestions(ls, params.text_document.uri, params.position, params.work_done_token)
        for s in suggestions:
            items.append(types.InlineCompletionItem(insert_text=s.text, range=doc.range_of(s.start, s.end)))
    return types.InlineCompletionList(items=items)


@server.feature(types.TEXT_DOCUMENT_COMPLETION, types.CompletionOptions(resolve_provider=False))
async def completion(ls: DiffillServer, params: types.CompletionParams) -> types.CompletionList:
    items: list[types.CompletionItem] = []
    if ls.feature_on("completion"):
        doc, suggestions = await _suggestions(ls, params.text_document.uri, params.position, params.work_done_token)
        engine = ls.worker.engine
        random_note = " (untrained weights)" if engine is not None and engine.is_random else ""
        for rank, s in enumerate(suggestions):
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
                text_edit=types.TextEdit(range=doc.range_of(s.start, s.end), new_text=s.text),
            ))
    # Incomplete: the answer depends on every character typed, so ask again.
    return types.CompletionList(is_incomplete=True, items=items)


async def _suggestions(ls: DiffillServer, uri: str, position: types.Position,
                       token: types.ProgressToken | None) -> tuple[Document | None, list[Suggestion]]:
    try:
        doc = ls.documents.get(uri)
        return doc, await ls.suggest_inline(doc, position, token)
    except DocumentError as exc:
        ls.log(str(exc), types.MessageType.Warning)
        return None, []


# == code actions ========================================================================


@server.feature(
    types.TEXT_DOCUMENT_CODE_ACTION,
    types.CodeActionOptions(
        code_action_kinds=[types.CodeActionKind.RefactorRewrite, types.CodeActionKind.QuickFix],
        resolve_provider=True,
    ),
)
def code_action(ls: DiffillServer, params: types.CodeActionParams) -> list[types.CodeAction | types.Command]:
    try:
        doc = ls.documents.get(params.text_document.uri)
        start, end = doc.range_offsets(params.range)
    except DocumentError as exc:
        ls.log(str(exc), types.MessageType.Warning)
        return []
    if not ls.settings.enabled or not ls.usable(doc):
        return []
    only = params.context.only if params.context else None
    literal, resolvable = capabilities.code_action_support(ls.client_capabilities)
    out: list[types.CodeAction | types.Command] = []
    for kind, title in available_actions(doc.code, start, end):
        action = ACTIONS[kind]
        lsp_kind = types.CodeActionKind(action.lsp_kind)
        if not ls.feature_on(action.feature):
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
        where = params.range if action.takes_range else params.range.start
        command = types.Command(title=title, command=action.command,
                                arguments=[doc.uri, ls.protocol._converter.unstructure(where)])
        out.append(types.CodeAction(title=title, kind=lsp_kind, command=command) if literal else command)
    return out


@server.feature(types.CODE_ACTION_RESOLVE)
async def code_action_resolve(ls: DiffillServer, action: types.CodeAction) -> types.CodeAction:
    data = action.data if isinstance(action.data, dict) else {}
    try:
        uri, version, which = data["uri"], data["version"], ACTIONS[data["action"]]
        start, end = int(data["start"]), int(data["end"])
    except (KeyError, TypeError, ValueError) as exc:
        raise JsonRpcInvalidParams(f"not a diffill code action (bad data: {exc})") from None
    try:
        doc = ls.documents.get(uri, version)
    except DocumentError as exc:
        raise JsonRpcContentModified(str(exc)) from None
    if not 0 <= start <= end <= len(doc.text):
        raise JsonRpcInvalidParams("code action range is outside the document")
    edits = await ls.run_action(which, doc, start, end, token=None)
    if edits is not None:
        action.edit = ls.workspace_edit(doc, edits)
    return action


# == rename ==============================================================================


@server.feature(types.TEXT_DOCUMENT_PREPARE_RENAME)
def prepare_rename(ls: DiffillServer, params: types.PrepareRenameParams) -> types.PrepareRenamePlaceholder | None:
    target = _rename_target(ls, params.text_document.uri, params.position)
    span = naming.prepare_rename(target[0].code, target[1]) if target else None
    if span is None:
        return None
    doc = target[0]
    return types.PrepareRenamePlaceholder(range=doc.range_of(*span), placeholder=doc.text[span[0] : span[1]])


@server.feature(types.TEXT_DOCUMENT_RENAME)
def rename(ls: DiffillServer, params: types.RenameParams) -> types.WorkspaceEdit | None:
    target = _rename_target(ls, params.text_document.uri, params.position)
    if target is None:
        return None
    doc, offset = target
    try:
        edits = naming.rename(doc.code, offset, params.new_name)
    except ActionError as exc:
        raise JsonRpcInvalidParams(str(exc)) from None
    return ls.workspace_edit(doc, edits)


def _rename_target(ls: DiffillServer, uri: str, position: types.Position) -> tuple[Document, int] | None:
    """The document and offset to rename at; None (logged) when rename is off or cannot apply there."""
    try:
        doc = ls.documents.get(uri)
        offset = doc.offset_at(position)
    except DocumentError as exc:
        ls.log(str(exc), types.MessageType.Warning)
        return None
    if not ls.feature_on("rename") or not ls.usable(doc):
        return None
    return doc, offset


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


async def _command_action(ls: DiffillServer, action: Action, args: tuple) -> None:
    want = types.Range if action.takes_range else types.Position
    doc, where = _command_target(ls, args, want)
    if not ls.feature_on(action.feature):
        ls.show(f"{action.kind} is switched off (diffill.features)", types.MessageType.Info)
        return None
    try:
        start, end = doc.range_offsets(where) if action.takes_range else (doc.offset_at(where),) * 2
    except DocumentError as exc:
        raise JsonRpcInvalidParams(str(exc)) from None
    # The work runs on its own, so the command can answer before it ends: clients time a
    # command out (eglot after 10 s) and an action may take longer.  Its cancel flag is the
    # request's ($/cancelRequest while unanswered), then the progress token's.
    work = asyncio.ensure_future(_apply_action(ls, action, doc, start, end, ls.request_cancel_event()))
    done, _ = await asyncio.wait({work}, timeout=ls.settings.command_reply_ms / 1000)
    if work in done:
        return work.result()  # the edit went out first; errors (content modified) answer the command
    work.add_done_callback(lambda task: _report_late_failure(ls, action, task))
    return None


async def _apply_action(ls: DiffillServer, action: Action, doc: Document, start: int, end: int,
                        cancel: tuple[Any, Any]) -> None:
    edits = await ls.run_action(action, doc, start, end, token=None, cancel=cancel)
    if edits is not None:
        ls.apply_edit(f"diffill: {action.kind}", ls.workspace_edit(doc, edits))


def _report_late_failure(ls: DiffillServer, action: Action, task: asyncio.Future) -> None:
    """An action whose command was answered already can only tell the user in a message."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        ls.show(f"{action.kind}: {exc}")


def _register_action_command(action: Action) -> None:
    @server.command(action.command)
    async def run_command(ls: DiffillServer, *args: Any) -> None:
        return await _command_action(ls, action, args)


for _action in ACTIONS.values():  # diffill.rewriteSelection, diffill.fillBody, diffill.repair, diffill.suggestName
    _register_action_command(_action)


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
