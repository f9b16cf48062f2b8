"""A hypothesis state machine drives the real server with random edits and requests.

The test keeps its own copy of every document (with its own, independent UTF-16 position
arithmetic) and checks every answer against it: no request fails with an internal error,
every edit and every range lies inside the document and inside the span its request was
about, and rename / prepareRename ranges cover exactly the identifier the copy shows
there (which catches any drift in incremental sync).

Faults mix in: frames with a wrong Content-Length or a body that is not JSON (the server
must lose that message only, and keep in sync), and lifecycle faults — shutdown with a
request in flight, requests after shutdown, exit with or without shutdown — after which
the machine checks the exit code and starts a fresh server with its documents reopened.

CI runs >= 1,000 steps (45 examples x up to 50 steps; runs can end early), framing and
lifecycle faults among them; `-m slow` runs 10,000.
"""

from __future__ import annotations

import asyncio
import threading
from bisect import bisect_right
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule, run_state_machine_as_test
from lsprotocol import types
from pygls.exceptions import JsonRpcContentModified, JsonRpcException, JsonRpcInvalidParams, JsonRpcRequestCancelled

from infill_engine.syntax import scopes, spans
from infill_engine.syntax.parse import Code, language_for
from tests.lsp.harness import EVENT_TIMEOUT_S, RawServer, capabilities, config, edits_for

ALLOWED_ERRORS = {JsonRpcInvalidParams.CODE, JsonRpcContentModified.CODE, JsonRpcRequestCancelled.CODE}
INVALID_REQUEST = -32600
RESTART_ODDS = 9  # a lifecycle fault acts one time in ten it is drawn: each costs a server start

TEMPLATES = [
    ("python", ".py", "import os\n\n\ndef area(r):\n    return 3.14 * r * r\n\n\nclass Shape:\n    def grow(self, k):\n"
                      "        pass\n\n\ntotal = area(2)\nprint(total)\n"),
    ("python", ".py", "def f(xs):\r\n    acc = 0\r\n    for x in xs:\r\n        acc += x\r\n    return acc\r\n"),
    ("python", ".py", ""),
    ("javascript", ".js", "function add(a, b) {\n  const s = a + b;\n  return s;\n}\n\nconsole.log(add(1, 2));\n"),
    ("typescript", ".ts", "function id<T>(x: T): T {\n  // TODO\n}\nconst y: number = id(3);\n"),
    ("go", ".go", "package main\n\nfunc sum(xs []int) int {\n\ttotal := 0\n\tfor _, x := range xs {\n\t\ttotal += x\n"
                  "\t}\n\treturn total\n}\n"),
    ("rust", ".rs", "fn double(x: i32) -> i32 {\n    todo!()\n}\n\nfn main() {\n    let v = double(2);\n}\n"),
    ("plaintext", ".txt", "just words, no grammar\n"),
    ("python", ".py", "x = 'é😀中'\ny = x + \"😀\"\n"),
]

FRAGMENTS = ["", "x", " ", "\n", "\r\n", "\t", "(", ")", ":", "def g():\n    ", "return ", "    pass\n", "é", "😀",
             "中", "{", "}", ";", "# TODO\n", "'''", "\\", "total", "1 + 2"]
insert_text = st.one_of(st.sampled_from(FRAGMENTS), st.text(alphabet="ab(){}:;\n\r\t é😀_=+-'\"#", max_size=12))
NAMES = st.sampled_from(["renamed", "acc", "x2", "_tmp", "not valid", "1bad", "def", "😀"])


# -- an independent copy of LSP position arithmetic (UTF-16 code units) --------------------


def line_starts(text: str) -> list[int]:
    starts, i = [0], 0
    while i < len(text):
        if text[i] == "\r":
            if text[i + 1 : i + 2] == "\n":
                i += 1
            starts.append(i + 1)
        elif text[i] == "\n":
            starts.append(i + 1)
        i += 1
    return starts


def line_content(text: str, line: int) -> tuple[int, int]:
    starts = line_starts(text)
    start = starts[line]
    end = starts[line + 1] if line + 1 < len(starts) else len(text)
    while end > start and text[end - 1] in "\r\n":
        end -= 1
    return start, end


def units(s: str) -> int:
    return sum(2 if ord(c) > 0xFFFF else 1 for c in s)


def to_position(text: str, offset: int) -> types.Position:
    starts = line_starts(text)
    line = bisect_right(starts, offset) - 1
    start, end = line_content(text, line)
    return types.Position(line=line, character=units(text[start : min(offset, end)]))


def to_offset(text: str, pos: types.Position) -> int | None:
    """str offset of a position; None when the line does not exist.  A character past the
    end of its line means the line's end (LSP spec)."""
    if pos.line >= len(line_starts(text)):
        return None
    start, end = line_content(text, pos.line)
    used = 0
    for i in range(start, end):
        width = 2 if ord(text[i]) > 0xFFFF else 1
        if used + width > pos.character:
            return i
        used += width
    return end


def in_document(text: str, rng: types.Range) -> bool:
    n_lines = len(line_starts(text))
    for p in (rng.start, rng.end):
        if p.line >= n_lines:
            return False
        start, end = line_content(text, p.line)
        if p.character > units(text[start:end]):
            return False
    return (rng.start.line, rng.start.character) <= (rng.end.line, rng.end.character)


# -- a client on its own thread, so hypothesis' synchronous rules can drive it ------------


class ClientThread:
    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.client = self.call(config().start())
        # Without the inlineCompletion capability the server offers completion as well,
        # and answers inline requests all the same: both paths get exercised.
        self.call(self.client.initialize_session(types.InitializeParams(
            capabilities=capabilities(inline=False),
            initialization_options={"maxHoleTokens": 4, "candidates": 1},
        )))

    def call(self, coro, timeout: float = 120) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def request(self, method: str, params: Any) -> tuple[Any, JsonRpcException | None]:
        """The result, or the error the server answered with (never an internal error)."""
        try:
            return self.call(self.client.protocol.send_request_async(method, params)), None
        except JsonRpcException as exc:
            assert exc.code in ALLOWED_ERRORS, f"{method} failed: {exc.code} {exc.message}"
            return None, exc

    def notify(self, method: str, params: Any) -> None:
        self.loop.call_soon_threadsafe(self.client.protocol.notify, method, params)

    def write_raw(self, data: bytes) -> None:
        """Bytes straight onto the server's stdin, in order with the client's own messages."""
        self.loop.call_soon_threadsafe(self.client._server.stdin.write, data)

    def start_request(self, method: str, params: Any):
        """Send a request without waiting: a concurrent.futures.Future of its answer."""
        return asyncio.run_coroutine_threadsafe(self.client.protocol.send_request_async(method, params), self.loop)

    def exit_code(self, timeout: float = EVENT_TIMEOUT_S) -> int:
        return self.call(asyncio.wait_for(self.client._server.wait(), timeout), timeout + 5)

    def restart(self) -> None:
        """A fresh server after the old one exited (as an editor restarts a dead server)."""
        self.call(self.client.stop(), timeout=60)
        self.client = self.call(config().start())
        self.call(self.client.initialize_session(types.InitializeParams(
            capabilities=capabilities(inline=False),
            initialization_options={"maxHoleTokens": 4, "candidates": 1},
        )))

    def close(self) -> None:
        async def shut() -> None:
            await self.client.shutdown_session()
            await self.client.stop()

        try:
            self.call(shut(), timeout=60)
        finally:
            server = self.client._server
            if server is not None and server.returncode is None:
                server.kill()
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


@pytest.fixture(scope="module")
def lsp() -> ClientThread:
    client = ClientThread()
    yield client
    client.close()


class Doc:
    def __init__(self, uri: str, language_id: str, text: str) -> None:
        self.uri, self.language_id, self.text, self.version = uri, language_id, text, 1

    @property
    def grammar(self) -> str | None:
        return language_for(self.language_id)


class LspMachine(RuleBasedStateMachine):
    lsp: ClientThread
    counter = 0  # documents opened, for unique URIs
    steps = 0  # rules run (the invariant runs after each)
    restarts = 0  # lifecycle faults so far this run
    frame_faults = 0  # framing faults so far this run

    def __init__(self) -> None:
        super().__init__()
        self.docs: dict[str, Doc] = {}

    # -- documents --------------------------------------------------------------------------

    def _open(self, template: int) -> None:
        language_id, ext, text = TEMPLATES[template]
        LspMachine.counter += 1
        uri = f"file:///fuzz/{LspMachine.counter}{ext}"
        self.docs[uri] = Doc(uri, language_id, text)
        self.lsp.notify(types.TEXT_DOCUMENT_DID_OPEN, types.DidOpenTextDocumentParams(
            text_document=types.TextDocumentItem(uri=uri, language_id=language_id, version=1, text=text)))

    @initialize(template=st.integers(0, len(TEMPLATES) - 1))
    def open_first(self, template: int) -> None:
        # One server serves every example: start each from the same settings.
        self.lsp.notify(types.WORKSPACE_DID_CHANGE_CONFIGURATION, types.DidChangeConfigurationParams(settings={
            "diffill": {"maxHoleTokens": 4, "candidates": 1, "threshold": 0.9,
                        "features": {"inlineCompletion": True, "rewrite": True}}}))
        self._open(template)

    @rule(template=st.integers(0, len(TEMPLATES) - 1))
    @precondition(lambda self: len(self.docs) < 4)
    def open_another(self, template: int) -> None:
        self._open(template)

    @rule(pick=st.integers(0, 100))
    @precondition(lambda self: len(self.docs) > 1)
    def close(self, pick: int) -> None:
        doc = self._doc(pick)
        del self.docs[doc.uri]
        self.lsp.notify(types.TEXT_DOCUMENT_DID_CLOSE,
                        types.DidCloseTextDocumentParams(text_document=types.TextDocumentIdentifier(uri=doc.uri)))

    def _doc(self, pick: int) -> Doc:
        return list(self.docs.values())[pick % len(self.docs)]

    def _offset(self, doc: Doc, a: int) -> int:
        offset = a % (len(doc.text) + 1)
        # Never between "\r" and "\n": not a position an editor can put a cursor at.
        if 0 < offset < len(doc.text) and doc.text[offset - 1] == "\r" and doc.text[offset] == "\n":
            offset -= 1
        return offset

    @rule(pick=st.integers(0, 100), a=st.integers(0, 10**6), length=st.integers(0, 12), new=insert_text,
          binary=st.integers(0, 40))
    def edit(self, pick: int, a: int, length: int, new: str, binary: int = 1) -> None:
        if binary == 0:
            new += "\x00"  # now and then the document turns "binary" (features go quiet)
        doc = self._doc(pick)
        start = self._offset(doc, a)
        end = self._offset(doc, min(len(doc.text), start + length))
        end = max(start, end)
        rng = types.Range(start=to_position(doc.text, start), end=to_position(doc.text, end))
        doc.text = doc.text[:start] + new + doc.text[end:]
        doc.version += 1
        self.lsp.notify(types.TEXT_DOCUMENT_DID_CHANGE, types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=doc.uri, version=doc.version),
            content_changes=[types.TextDocumentContentChangePartial(range=rng, text=new)]))

    @rule(pick=st.integers(0, 100), text=st.sampled_from([t for _, _, t in TEMPLATES]))
    def replace_everything(self, pick: int, text: str) -> None:
        doc = self._doc(pick)
        doc.text = text
        doc.version += 1
        self.lsp.notify(types.TEXT_DOCUMENT_DID_CHANGE, types.DidChangeTextDocumentParams(
            text_document=types.VersionedTextDocumentIdentifier(uri=doc.uri, version=doc.version),
            content_changes=[types.TextDocumentContentChangeWholeDocument(text=text)]))

    # -- requests ---------------------------------------------------------------------------

    def _position(self, doc: Doc, a: int, wild: bool) -> types.Position:
        if wild:  # past the last line, or far past a line's end
            pos = to_position(doc.text, self._offset(doc, a))
            return types.Position(line=pos.line + a % 3 * 50, character=pos.character + a % 7 * 40)
        return to_position(doc.text, self._offset(doc, a))

    @rule(pick=st.integers(0, 100), a=st.integers(0, 10**6), oddity=st.integers(0, 9))
    def inline_completion(self, pick: int, a: int, oddity: int) -> None:
        # one request in ten is at a wild position, one in ten for an unknown document
        wild, known = oddity == 0, oddity != 1
        doc = self._doc(pick)
        pos = self._position(doc, a, wild)
        uri = doc.uri if known else "file:///fuzz/never-opened.py"
        result, _ = self.lsp.request(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=uri), position=pos,
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)))
        cursor = to_offset(doc.text, pos)
        for item in result.items if result else []:
            assert known and cursor is not None, "a suggestion for an unknown document or a missing line"
            self._check_on_cursor_line(doc, pos, cursor, item.range)
            assert item.insert_text

    @rule(pick=st.integers(0, 100), a=st.integers(0, 10**6))
    def completion(self, pick: int, a: int) -> None:
        doc = self._doc(pick)
        pos = self._position(doc, a, wild=False)
        result, _ = self.lsp.request(types.TEXT_DOCUMENT_COMPLETION, types.CompletionParams(
            text_document=types.TextDocumentIdentifier(uri=doc.uri), position=pos))
        for item in result.items if result else []:
            self._check_on_cursor_line(doc, pos, to_offset(doc.text, pos), item.text_edit.range)

    def _check_on_cursor_line(self, doc: Doc, pos: types.Position, cursor: int, rng: types.Range) -> None:
        assert in_document(doc.text, rng), (rng, doc.text)
        assert rng.start.line == rng.end.line == pos.line
        start, end = to_offset(doc.text, rng.start), to_offset(doc.text, rng.end)
        assert start <= cursor <= end

    @rule(pick=st.integers(0, 100), a=st.integers(0, 10**6), length=st.integers(0, 40), resolve=st.booleans(),
          which=st.integers(0, 3), edit_between=st.booleans())
    def code_action(self, pick: int, a: int, length: int, resolve: bool, which: int, edit_between: bool) -> None:
        doc = self._doc(pick)
        start = self._offset(doc, a)
        end = max(start, self._offset(doc, min(len(doc.text), start + length)))
        rng = types.Range(start=to_position(doc.text, start), end=to_position(doc.text, end))
        offered, _ = self.lsp.request(types.TEXT_DOCUMENT_CODE_ACTION, types.CodeActionParams(
            text_document=types.TextDocumentIdentifier(uri=doc.uri), range=rng,
            context=types.CodeActionContext(diagnostics=[])))
        if not offered or not resolve:
            return
        action = offered[which % len(offered)]
        text_then = doc.text
        if edit_between:  # the document moves on before the user picks the action
            self.edit(list(self.docs).index(doc.uri), 0, 0, "#")
        resolved, error = self.lsp.request(types.CODE_ACTION_RESOLVE, action)
        if error is not None:
            assert error.code == JsonRpcContentModified.CODE and edit_between
            return
        assert not edit_between, "resolved against a document that changed since"
        if resolved.edit is None:
            return
        edits = edits_for(resolved.edit, doc.uri)
        for e in edits:
            assert in_document(text_then, e.range)
        got = sorted((to_offset(text_then, e.range.start), to_offset(text_then, e.range.end)) for e in edits)
        kind, grammar = action.data["action"], doc.grammar
        if kind == "rewrite":
            assert got == [spans.rewrite_span(Code(text_then, grammar), start, end)]
        elif kind == "fillBody":
            assert got == [spans.body_span(Code(text_then, grammar), start)]
        elif kind == "repair":
            assert got == [(start, end)]
        else:
            assert got == scopes.occurrences(Code(text_then, grammar), start)

    @rule(pick=st.integers(0, 100), a=st.integers(0, 10**6), name=NAMES)
    def rename(self, pick: int, a: int, name: str) -> None:
        doc = self._doc(pick)
        pos = self._position(doc, a, wild=False)
        ident = doc.text  # read before the requests: a rule runs alone, nothing edits meanwhile
        prepared, _ = self.lsp.request(types.TEXT_DOCUMENT_PREPARE_RENAME, types.PrepareRenameParams(
            text_document=types.TextDocumentIdentifier(uri=doc.uri), position=pos))
        if prepared is None:
            return
        assert in_document(ident, prepared.range)
        placeholder = ident[to_offset(ident, prepared.range.start) : to_offset(ident, prepared.range.end)]
        assert placeholder == prepared.placeholder, "the server's text differs from the client's"
        result, error = self.lsp.request(types.TEXT_DOCUMENT_RENAME, types.RenameParams(
            text_document=types.TextDocumentIdentifier(uri=doc.uri), position=pos, new_name=name))
        if error is not None:
            assert error.code == JsonRpcInvalidParams.CODE
            return
        edits = edits_for(result, doc.uri)
        assert edits
        for e in edits:
            assert in_document(ident, e.range)
            assert ident[to_offset(ident, e.range.start) : to_offset(ident, e.range.end)] == placeholder

    @rule(settings_=st.fixed_dictionaries({}, optional={
        "maxHoleTokens": st.sampled_from([0, 2, 4, 6, 513, "x"]),  # 0, 513, "x" are rejected
        "threshold": st.sampled_from([0.5, 0.9, 1.0, 0, 2]),
        "candidates": st.sampled_from([1, 2, 9]),
        "features": st.fixed_dictionaries({}, optional={"rewrite": st.booleans(), "inlineCompletion": st.booleans(),
                                                        "bogus": st.booleans()}),
    }))
    def configure(self, settings_: dict) -> None:
        self.lsp.notify(types.WORKSPACE_DID_CHANGE_CONFIGURATION,
                        types.DidChangeConfigurationParams(settings={"diffill": settings_}))

    # -- faults -------------------------------------------------------------------------------

    @rule(fault=st.sampled_from(["short", "long", "not-json", "not-utf8", "not-an-object"]),
          body_of=st.sampled_from(["status", "garbage"]))
    def framing_fault(self, fault: str, body_of: str) -> None:
        """A broken frame: only the message inside it may be lost (never a document change,
        so the documents stay in step); the next request must be answered as usual."""
        body = b'{"jsonrpc": "2.0", "id": "lost", "method": "workspace/executeCommand", ' \
               b'"params": {"command": "diffill.status", "arguments": []}}' if body_of == "status" else b"@garbage@"
        if fault == "short":
            frame = RawServer.frame(body, len(body) - 10)
        elif fault == "long":
            frame = RawServer.frame(body, len(body) + 40)
        elif fault == "not-json":
            frame = RawServer.frame(body[: len(body) // 2])
        elif fault == "not-utf8":
            frame = RawServer.frame(b"\xff\xfe" + body)
        else:
            frame = RawServer.frame(b"[1, 2, 3]")
        LspMachine.frame_faults += 1
        self.lsp.write_raw(frame)
        status, error = self.lsp.request(types.WORKSPACE_EXECUTE_COMMAND,
                                         types.ExecuteCommandParams(command="diffill.status"))
        assert error is None and status["state"] in ("loading", "ready", "busy", "disabled"), (fault, status)

    @rule(pick=st.integers(0, 100), a=st.integers(0, 10**6), polite=st.booleans(), now=st.integers(0, RESTART_ODDS))
    def lifecycle_fault(self, pick: int, a: int, polite: bool, now: int) -> None:
        """An inline request in flight, then `shutdown` (polite) or straight `exit`.  Only
        when `now` is 0: each costs a server start.  (Not a precondition on a count: a
        rule's availability must depend on the drawn data alone, or shrinking breaks.)"""
        if now:
            return
        LspMachine.restarts += 1
        doc = self._doc(pick)
        in_flight = self.lsp.start_request(types.TEXT_DOCUMENT_INLINE_COMPLETION, types.InlineCompletionParams(
            text_document=types.TextDocumentIdentifier(uri=doc.uri), position=self._position(doc, a, wild=False),
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)))
        if polite:
            result, error = self.lsp.request(types.SHUTDOWN, None)
            assert error is None and result is None
            try:
                in_flight.result(EVENT_TIMEOUT_S)  # answered: a result, or cancelled
            except JsonRpcException as exc:
                assert exc.code in ALLOWED_ERRORS, (exc.code, exc.message)
            try:
                self.lsp.call(self.lsp.client.protocol.send_request_async(
                    types.WORKSPACE_EXECUTE_COMMAND, types.ExecuteCommandParams(command="diffill.status")))
                raise AssertionError("a request after shutdown was answered")
            except JsonRpcException as exc:
                assert exc.code == INVALID_REQUEST, (exc.code, exc.message)
        self.lsp.notify(types.EXIT, None)
        assert self.lsp.exit_code() == (0 if polite else 1)
        in_flight.cancel()
        self.lsp.restart()
        for d in self.docs.values():  # the new server knows nothing: reopen at the current text
            self.lsp.notify(types.TEXT_DOCUMENT_DID_OPEN, types.DidOpenTextDocumentParams(
                text_document=types.TextDocumentItem(uri=d.uri, language_id=d.language_id, version=d.version,
                                                     text=d.text)))

    @invariant()
    def server_alive(self) -> None:
        LspMachine.steps += 1
        assert self.lsp.client._server.returncode is None


def run_machine(lsp: ClientThread, examples: int, steps: int, derandomize: bool) -> int:
    LspMachine.lsp = lsp
    LspMachine.steps = 0
    LspMachine.restarts = 0
    LspMachine.frame_faults = 0
    run_state_machine_as_test(LspMachine, settings=settings(
        max_examples=examples, stateful_step_count=steps, deadline=None, derandomize=derandomize,
        suppress_health_check=list(HealthCheck), database=None,
    ))
    status = lsp.call(lsp.client.workspace_execute_command_async(types.ExecuteCommandParams(command="diffill.status")))
    assert status["state"] in ("ready", "busy", "disabled")
    return LspMachine.steps


def test_random_edits_and_requests(lsp: ClientThread) -> None:
    # Derandomized, so CI sees the same 1,000+ steps every run.
    assert run_machine(lsp, examples=45, steps=50, derandomize=True) >= 1000
    assert LspMachine.frame_faults >= 20 and LspMachine.restarts >= 2, (LspMachine.frame_faults, LspMachine.restarts)


@pytest.mark.slow
def test_random_edits_and_requests_long(lsp: ClientThread) -> None:
    assert run_machine(lsp, examples=150, steps=100, derandomize=False) >= 10_000
