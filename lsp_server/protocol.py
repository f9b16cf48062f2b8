"""The transport: pygls' protocol, patched where diffill needs it to behave otherwise, and
the stdio loop that feeds it (pygls' own loop cannot recover from a bad frame)."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import threading
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn

from lsprotocol import types
from pygls.exceptions import JsonRpcException, JsonRpcInvalidParams, JsonRpcInvalidRequest, JsonRpcParseError
from pygls.io_ import StdoutWriter
from pygls.protocol import LanguageServerProtocol, lsp_method

if TYPE_CHECKING:
    from .session import DiffillServer

log = logging.getLogger(__name__)


class _Malformed:
    """Stands in for a message whose params did not match the LSP schema (already answered)."""


# A header block: Content-Length first (as every client sends it), any other header lines,
# an empty line.  Valid JSON cannot hold a raw CRLF inside a string, so a match *inside* a
# body means that body is cut short or its length was wrong: the stream resumes there.
HEADER = re.compile(rb"Content-Length:[ \t]*(\d+)[ \t]*\r\n(?:[^\r\n]+\r\n)*\r\n")
MAX_HEADER = 512  # bytes kept from a stretch with no header, in case one is arriving split
# The stream ends inside a header (or the start of one): more bytes will complete it.  No
# valid body ends like this (JSON ends with } or ]), so a match that begins inside a body
# is a header arriving, never text in the body.
PARTIAL_HEADER = re.compile(
    rb"(?:" + b"|".join(re.escape(b"Content-Length:"[:i]) for i in range(1, 15)) + rb")\Z"
    rb"|Content-Length:[ \t]*\d*[ \t]*(?:\r\n(?:[^\r\n]+\r\n)*[^\r\n]*)?\r?\Z")


class FrameReader:
    """Cuts the byte stream into message bodies, and finds its feet again after a bad frame.

    pygls' reader trusts Content-Length and matches headers only at the start of a line, so
    one wrong length leaves it reading bodies as headers for good.  Here the next message
    starts at the next header, wherever it is: a body declared too short is cut at its
    length (the rest is skipped up to the next header); one declared too long ends where
    the next header begins (so the message after it is not lost, nor waited for)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._scanned = 0  # how far the pending body was searched for a header already

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        bodies = []
        while (body := self._next()) is not None:
            bodies.append(body)
        return bodies

    def _next(self) -> bytes | None:
        buf = self._buf
        head = HEADER.search(buf)
        if head is None:
            if len(buf) > MAX_HEADER:
                log.warning("skipped %d bytes that are not a message", len(buf) - MAX_HEADER)
                del buf[:-MAX_HEADER]
            return None
        if head.start():
            skipped = bytes(buf[: head.start()])
            if not re.fullmatch(rb"(?:[^\r\n]+\r\n)*", skipped):  # other headers before Content-Length are fine
                log.warning("skipped %d bytes before a Content-Length header", len(skipped))
            del buf[: head.start()]
            self._scanned = 0
            head = HEADER.match(buf)
        start, end = head.end(), head.end() + int(head.group(1))
        # A header that *begins* inside the declared body ends it, even if the header runs
        # past the declared end (a length a few bytes too long, then a long header).
        lo = max(start, self._scanned - MAX_HEADER)
        nxt = HEADER.search(buf, lo, min(end + MAX_HEADER, len(buf)))
        if nxt is not None and nxt.start() < end:
            log.warning("a message ended before its Content-Length said (%d of %d bytes)",
                        nxt.start() - start, end - start)
            end = nxt.start()
        elif len(buf) < end:
            self._scanned = len(buf)
            return None
        elif len(buf) < end + MAX_HEADER and (
                (part := PARTIAL_HEADER.search(buf, max(lo, len(buf) - MAX_HEADER))) and part.start() < end):
            return None  # a header that begins inside the body is still arriving
        body = bytes(buf[start:end])
        del buf[:end]
        self._scanned = 0
        return body


def serve_stdio(protocol: "DiffillProtocol", stdin: BinaryIO, stdout: BinaryIO) -> NoReturn:
    """Serve over stdin/stdout until `exit` or the end of stdin, then end the process."""
    protocol.set_writer(StdoutWriter(stdout))
    asyncio.run(_read_stdin(protocol, stdin))


async def _read_stdin(protocol: "DiffillProtocol", stdin: BinaryIO) -> NoReturn:
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes] = asyncio.Queue()

    def pump() -> None:
        data = b"-"
        while data:
            try:
                data = stdin.read1(65536)
            except (OSError, ValueError):
                data = b""
            loop.call_soon_threadsafe(chunks.put_nowait, data)

    # A daemon thread: a read blocked on a silent client must never hold the process up.
    threading.Thread(target=pump, name="diffill-stdin", daemon=True).start()
    frames = FrameReader()
    while data := await chunks.get():
        for body in protocol.coalesce(frames.feed(data)):
            protocol.handle_body(body)
            # Let the handler just scheduled start before the next message is read, as pygls'
            # own reader does: a request and its $/cancelRequest in one chunk otherwise meet a
            # task that never ran (seen: a cancelled inline request left without an answer).
            await asyncio.sleep(0)
    # The client is gone: end here, inside the loop, so that no teardown (cancelled handlers
    # writing answers, executors joined) runs after the stream has closed.
    protocol.end_process()


class DiffillProtocol(LanguageServerProtocol):
    """pygls' protocol with these changes:

    - document sync goes to our DocumentStore only (it keeps tree-sitter trees in step);
      pygls' own workspace copy of every document is skipped;
    - a request whose params do not match the schema gets an InvalidParams *response*
      (pygls only logs it, which leaves the client waiting forever);
    - `$/cancelRequest` also sets the request's cancel event, which stops the model at
      its next step even when pygls cannot cancel the task itself (executeCommand);
    - a body that is not JSON gets a Parse error, one that is not a JSON-RPC message an
      Invalid Request (pygls logs a traceback and answers nothing);
    - integer fields (line, character, version, ...) take integers only: cattrs would
      truncate 1.5 to line 1 and answer about a place the client never named;
    - lifecycle: `shutdown` cancels what is in flight without tripping over pygls'
      live dict iteration; requests after it get Invalid Request (pygls: silence); `exit`
      ends the process at once (see end_process).
    """

    _server: "DiffillServer"

    # Blanked out so pygls does not register its built-in handlers for these methods:
    # the handlers in server.py then receive didOpen/didChange/didClose directly.
    lsp_text_document__did_open = None
    lsp_text_document__did_change = None
    lsp_text_document__did_close = None

    _closed = False  # set by end_process: nothing is written after the stream is done

    def __init__(self, server, converter) -> None:
        super().__init__(server, converter)
        self._converter.register_structure_hook(int, _strict_int)
        # bool subclasses int, so it would dispatch to _strict_int now: keep cattrs' own hook.
        self._converter.register_structure_hook(bool, lambda value, _type: bool(value))

    def coalesce(self, bodies: list[bytes]) -> list[bytes | dict]:
        """The messages read together, with each suggestion request that a later change to
        its document (in the same read) has made stale answered at once with no items: in a
        storm of changes only the newest version is served, and the model is never queued
        for text that is gone.  The rest come back parsed (or as bytes, to be reported)."""
        messages: list[bytes | dict] = []
        for body in bodies:
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
            messages.append(parsed if isinstance(parsed, dict) else body)  # handle_body reports the rest
        changed_later: set[str] = set()
        keep: list[bytes | dict] = []
        for msg in reversed(messages):
            method = msg.get("method") if isinstance(msg, dict) else None
            uri = _document_uri(msg)
            if method == types.TEXT_DOCUMENT_DID_CHANGE and uri is not None:
                changed_later.add(uri)
            elif method in SUGGESTION_REQUESTS and uri in changed_later and _valid_id(msg.get("id")) \
                    and not self._shutdown:
                result = {"items": []} if method == types.TEXT_DOCUMENT_INLINE_COMPLETION else \
                    {"isIncomplete": True, "items": []}  # incomplete: ask again at the new text
                self._send_data({"jsonrpc": "2.0", "id": msg["id"], "result": result})
                continue
            keep.append(msg)
        keep.reverse()
        return keep

    def handle_body(self, body: bytes | dict) -> None:
        """One frame's body (or its JSON, parsed already), checked as JSON-RPC before pygls sees it."""
        try:
            data = body if isinstance(body, dict) else json.loads(body)
        except ValueError as exc:  # JSONDecodeError, and UnicodeDecodeError for non-UTF-8 bytes
            log.warning("a message body is not JSON: %s", exc)
            return self._send_error(None, JsonRpcParseError.CODE, f"Parse error: {exc}")
        if problem := _not_a_message(data):
            log.warning("invalid message: %s", problem)
            msg_id = data.get("id") if isinstance(data, dict) else None
            return self._send_error(msg_id if _valid_id(msg_id) else None, JsonRpcInvalidRequest.CODE,
                                    f"Invalid Request: {problem}")
        try:
            self.handle_message(self.structure_message(data))
        except Exception:  # one bad message must not end the loop that reads the others
            log.exception("could not handle a %s message", data.get("method", "response"))

    def _send_error(self, msg_id: Any, code: int, message: str) -> None:
        # A plain dict: lsprotocol's converter would drop "id": null, which JSON-RPC requires.
        self._send_data({"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": message}})

    def _send_data(self, data: Any) -> None:
        if not self._closed:
            super()._send_data(data)

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
        method = getattr(message, "method", None)
        if self._shutdown and method is not None and method != types.EXIT:
            if hasattr(message, "id"):  # a request: it is owed an answer, notifications are dropped
                self._send_error(message.id, JsonRpcInvalidRequest.CODE, f"Invalid Request: {method} after shutdown")
            return
        return super().handle_message(message)

    @lsp_method(types.SHUTDOWN)
    def lsp_shutdown(self, *args):
        """pygls' lsp_shutdown, iterating over a copy: cancelling a future runs callbacks that
        remove entries from `_request_futures` (pygls iterates the live dict and fails with
        "dictionary changed size during iteration")."""
        if (user_handler := self.fm.features.get(types.SHUTDOWN)) is not None:
            yield user_handler, args, None
        current_id = self.msg_id
        for msg_id, future in list(self._request_futures.items()):
            if msg_id != current_id and not future.done():
                future.cancel()
        self._shutdown = True

    @lsp_method(types.EXIT)
    def lsp_exit(self, *args):
        if (user_handler := self.fm.features.get(types.EXIT)) is not None:
            yield user_handler, args, None
        self.end_process()

    def end_process(self) -> NoReturn:
        """End the process now: code 0 after `shutdown`, 1 without (the LSP rule).

        Not sys.exit: Python would then join the model thread, which may be inside a torch
        op or the torch import (seconds, uninterruptible), and asyncio would run cancelled
        handlers that write to a closed stream.  Every message was flushed when written;
        nothing else needs saving, so the log is flushed and the process ends."""
        self._closed = True
        logging.shutdown()
        os._exit(0 if self._shutdown else 1)

    def _handle_cancel_notification(self, msg_id):
        event = self._server.cancel_events.get(msg_id)
        if event is not None:
            event.set()
        return super()._handle_cancel_notification(msg_id)


def _strict_int(value: Any, _type: type) -> int:
    """An LSP integer: an int, or a float with no fraction (3.0, as some JSON writers put it);
    never 1.5 or true, which would otherwise become 1 and point somewhere else."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (
            isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"expected an integer, got {value!r}")
    return int(value)


SUGGESTION_REQUESTS = (types.TEXT_DOCUMENT_INLINE_COMPLETION, types.TEXT_DOCUMENT_COMPLETION)


def _document_uri(msg: Any) -> str | None:
    """params.textDocument.uri of a message, if it has one."""
    params = msg.get("params") if isinstance(msg, dict) else None
    doc = params.get("textDocument") if isinstance(params, dict) else None
    uri = doc.get("uri") if isinstance(doc, dict) else None
    return uri if isinstance(uri, str) else None


def _valid_id(msg_id: Any) -> bool:
    return isinstance(msg_id, (str, int)) and not isinstance(msg_id, bool)


def _not_a_message(data: Any) -> str | None:
    """Why `data` is not a JSON-RPC 2.0 request, notification or response; None if it is."""
    if not isinstance(data, dict):
        return f"expected a JSON object, got {type(data).__name__}"
    if data.get("jsonrpc") != "2.0":
        return 'expected "jsonrpc": "2.0"'
    if "id" in data and data["id"] is not None and not _valid_id(data["id"]):
        return "an id must be a string or an integer"
    if "method" in data:
        return None if isinstance(data["method"], str) else "a method must be a string"
    if "id" in data and ("result" in data or "error" in data):
        return None
    return "neither a request, a notification nor a response"
