"""The transport: pygls' protocol, patched where diffill needs it to behave otherwise."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams
from pygls.protocol import LanguageServerProtocol

if TYPE_CHECKING:
    from .session import DiffillServer

log = logging.getLogger(__name__)


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
    # the handlers in server.py then receive didOpen/didChange/didClose directly.
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
