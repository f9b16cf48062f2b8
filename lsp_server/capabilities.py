"""What the client can do, read from the capabilities it sent with `initialize`.

One question per function, so a handler says what it needs to know ("does the client
resolve code actions lazily?") instead of walking the capability tree itself.
"""

from __future__ import annotations

from lsprotocol import types


def inline_completion(caps: types.ClientCapabilities) -> bool:
    """The client asks for inline completions (LSP 3.18)."""
    return caps.text_document is not None and caps.text_document.inline_completion is not None


def pulls_configuration(caps: types.ClientCapabilities) -> bool:
    """The client answers workspace/configuration (and may send empty didChangeConfiguration)."""
    ws = caps.workspace
    return bool(ws is not None and ws.configuration)


def code_action_support(caps: types.ClientCapabilities) -> tuple[bool, bool]:
    """(client takes CodeAction literals, client resolves their `edit` lazily)."""
    td = caps.text_document
    ca = td.code_action if td is not None else None
    if ca is None:
        return False, False
    resolve = ca.resolve_support is not None and "edit" in (ca.resolve_support.properties or [])
    return ca.code_action_literal_support is not None, resolve


def versioned_edits(caps: types.ClientCapabilities) -> bool:
    """The client takes WorkspaceEdits as documentChanges (with the document version)."""
    ws = caps.workspace
    return bool(ws is not None and ws.workspace_edit is not None and ws.workspace_edit.document_changes)


def work_done_progress(caps: types.ClientCapabilities) -> bool:
    """The client shows progress on tokens the server creates (window/workDoneProgress/create)."""
    window = caps.window
    return bool(window is not None and window.work_done_progress)
