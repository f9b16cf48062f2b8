"""Shared pieces for the language-server tests: hand-built client capabilities (pytest-lsp's
profiles lack inlineCompletion), a client that records applyEdit and diffill/status, and
helpers to open documents and apply LSP edits to a text the way an editor would."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Any

from lsprotocol import types
from pytest_lsp import ClientServerConfig, LanguageClient, make_test_lsp_client

from lsp_server.documents import Document
from tests import REPO

SERVER_COMMAND = [sys.executable, "-m", "lsp_server"]


# A small Python module with a function to rewrite, a body to fill and names to rename; shared by
# the action tests and the server tests.
SOURCE = '''import math


def area(radius):
    return math.pi * radius ** 2


def describe(shape, radius):
    total = area(radius)
    label = f"{shape}: {total:.2f}"
    return label


def todo(items):
    pass


print(describe("circle", 2.0))
'''

# A global shadowed by a local of the same name: renames must keep the two apart.
SHADOW = '''count = 10


def tally(values):
    count = 0
    for v in values:
        count += v
    return count


print(count)
'''


# Tests wait for events (a status, an edit, a progress report), never for a wall-clock
# budget: this limit only stops a hang, and is generous because a slow host may take a
# minute to import torch and load a model.
EVENT_TIMEOUT_S = 300.0


async def wait_until(predicate, what: str, timeout: float = EVENT_TIMEOUT_S) -> None:
    """Until `predicate()` holds (checked every 20 ms); fails naming `what` after `timeout`."""
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout:.0f} s for {what}")
        await asyncio.sleep(0.02)


def server_env(model: str | None = "tiny-random") -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DIFFILL_MODEL"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    if model is not None:
        env["DIFFILL_MODEL"] = model
    return env


def capabilities(*, inline: bool = True, resolve: bool = True, literal: bool = True,
                 progress: bool = True, document_changes: bool = True) -> types.ClientCapabilities:
    return types.ClientCapabilities(
        general=types.GeneralClientCapabilities(position_encodings=[types.PositionEncodingKind.Utf16]),
        window=types.WindowClientCapabilities(work_done_progress=progress),
        workspace=types.WorkspaceClientCapabilities(
            apply_edit=True,
            configuration=True,
            workspace_edit=types.WorkspaceEditClientCapabilities(document_changes=document_changes),
        ),
        text_document=types.TextDocumentClientCapabilities(
            synchronization=types.TextDocumentSyncClientCapabilities(),
            completion=types.CompletionClientCapabilities(
                completion_item=types.ClientCompletionItemOptions(snippet_support=False),
            ),
            inline_completion=types.InlineCompletionClientCapabilities() if inline else None,
            code_action=types.CodeActionClientCapabilities(
                code_action_literal_support=types.ClientCodeActionLiteralOptions(
                    code_action_kind=types.ClientCodeActionKindOptions(
                        value_set=[types.CodeActionKind.RefactorRewrite, types.CodeActionKind.QuickFix]
                    )
                ) if literal else None,
                data_support=True,
                resolve_support=types.ClientCodeActionResolveOptions(properties=["edit"]) if resolve else None,
            ),
            rename=types.RenameClientCapabilities(prepare_support=True),
        ),
    )


def make_client() -> LanguageClient:
    client = make_test_lsp_client()
    client.applied_edits = []  # type: ignore[attr-defined]
    client.statuses = []  # type: ignore[attr-defined]

    @client.feature(types.WORKSPACE_APPLY_EDIT)
    def apply_edit(params: types.ApplyWorkspaceEditParams) -> types.ApplyWorkspaceEditResult:
        client.applied_edits.append(params)  # type: ignore[attr-defined]
        return types.ApplyWorkspaceEditResult(applied=True)

    @client.feature("diffill/status")
    def status(params: Any) -> None:
        # pygls hands unknown notifications' params over as a namedtuple
        client.statuses.append(params._asdict() if hasattr(params, "_asdict") else dict(params))  # type: ignore[attr-defined]

    return client


def config(model: str | None = "tiny-random") -> ClientServerConfig:
    return ClientServerConfig(server_command=SERVER_COMMAND, server_env=server_env(model), client_factory=make_client)


async def initialize(client: LanguageClient, options: dict | None = None, **caps: bool) -> types.InitializeResult:
    return await client.initialize_session(types.InitializeParams(
        capabilities=capabilities(**caps),
        initialization_options=options if options is not None else {"maxHoleTokens": 8},
    ))


async def close(client: LanguageClient) -> None:
    """Shut the server down politely; kill it if it does not answer (a failed test must not
    hang in pygls' stop(), which waits for the process to exit by itself)."""
    if client._server is not None and client._server.returncode is None:
        try:
            await asyncio.wait_for(client.shutdown_session(), 20)
        except Exception:
            pass
    if client._server is not None and client._server.returncode is None:
        client._server.kill()
    await client.stop()


async def send_raw(client: LanguageClient, method: str, params: Any, msg_id: str) -> Any:
    """Send a request whose params are plain JSON, unchecked: how a buggy client sends
    params that do not match the LSP schema (pygls' typed send would refuse them)."""
    from concurrent.futures import Future

    from pygls.protocol.json_rpc import JsonRPCRequestMessage

    future: Future = Future()
    client.protocol._request_futures[msg_id] = future
    client.protocol._send_data(JsonRPCRequestMessage(id=msg_id, method=method, jsonrpc="2.0", params=params))
    return await asyncio.wait_for(asyncio.wrap_future(future), EVENT_TIMEOUT_S)


def open_doc(client: LanguageClient, uri: str, text: str, language: str = "python", version: int = 1) -> None:
    client.text_document_did_open(types.DidOpenTextDocumentParams(
        text_document=types.TextDocumentItem(uri=uri, language_id=language, version=version, text=text)))


def change_doc(client: LanguageClient, uri: str, version: int, rng: types.Range, text: str) -> None:
    client.text_document_did_change(types.DidChangeTextDocumentParams(
        text_document=types.VersionedTextDocumentIdentifier(uri=uri, version=version),
        content_changes=[types.TextDocumentContentChangePartial(range=rng, text=text)],
    ))


def position_of(text: str, needle: str, delta: int = 0) -> types.Position:
    return Document("file:///x", "python", 0, text).position_at(text.index(needle) + delta)


def offsets(text: str, rng: types.Range) -> tuple[int, int]:
    return Document("file:///x", "python", 0, text).range_offsets(rng)


def apply_edits(text: str, edits: list[types.TextEdit]) -> str:
    """Apply non-overlapping TextEdits (ranges in the original text), as an editor does."""
    spans = sorted(((*offsets(text, e.range), e.new_text) for e in edits), reverse=True)
    for start, end, new in spans:
        text = text[:start] + new + text[end:]
    return text


def edits_for(edit: types.WorkspaceEdit, uri: str) -> list[types.TextEdit]:
    out: list[types.TextEdit] = []
    for change in edit.document_changes or []:
        if isinstance(change, types.TextDocumentEdit) and change.text_document.uri == uri:
            out.extend(change.edits)
    out.extend((edit.changes or {}).get(uri, []))
    return out


def all_edit_uris(edit: types.WorkspaceEdit) -> set[str]:
    uris = set((edit.changes or {}).keys())
    for change in edit.document_changes or []:
        uris.add(change.text_document.uri)
    return uris


class RawServer:
    """`python -m lsp_server` driven with raw bytes on its stdin: how a broken or hostile
    client talks.  A thread parses the server's stdout into messages (a queue)."""

    def __init__(self, model: str | None = "tiny-random", command: list[str] = SERVER_COMMAND) -> None:
        import queue
        import subprocess
        import threading

        self.proc = subprocess.Popen(command, env=server_env(model), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        self.messages: "queue.Queue[dict]" = queue.Queue()
        self.stderr = b""
        self._write_lock = threading.Lock()
        self._stderr_thread = threading.Thread(target=self._read_stderr, daemon=True)
        self._stderr_thread.start()
        threading.Thread(target=self._read_stdout, daemon=True).start()

    def _read_stdout(self) -> None:
        import json

        out = self.proc.stdout
        while True:
            length = None
            while (line := out.readline()) not in (b"\r\n", b""):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
            if not line or length is None:
                return
            msg = json.loads(out.read(length))
            if "method" in msg and "id" in msg:  # the server asks: answer as an editor would
                result = {"workspace/applyEdit": {"applied": True}, "workspace/configuration": [None]}
                try:
                    self.send({"jsonrpc": "2.0", "id": msg["id"], "result": result.get(msg["method"])})
                except (OSError, ValueError):
                    pass  # stdin closed by the test
            self.messages.put(msg)

    def _read_stderr(self) -> None:
        while chunk := self.proc.stderr.read1(65536):
            self.stderr += chunk

    def write(self, data: bytes) -> None:
        with self._write_lock:  # the stdout thread answers the server's requests too
            self.proc.stdin.write(data)
            self.proc.stdin.flush()

    @staticmethod
    def frame(body: bytes | dict | list, length: int | None = None) -> bytes:
        import json

        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
        return b"Content-Length: %d\r\n\r\n" % (len(body) if length is None else length) + body

    def send(self, body: bytes | dict | list, length: int | None = None) -> None:
        self.write(self.frame(body, length))

    def request(self, msg_id: Any, method: str, params: Any = None) -> None:
        self.send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})

    def notify(self, method: str, params: Any = None) -> None:
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def responses(self, ids: set, timeout: float = EVENT_TIMEOUT_S) -> dict[Any, dict]:
        """The responses to `ids` (other messages are skipped), waiting up to `timeout`."""
        import queue
        import time

        found: dict[Any, dict] = {}
        deadline = time.monotonic() + timeout
        while not ids <= set(found):
            try:
                msg = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if "method" not in msg and msg.get("id", "-") in ids | {None}:
                found[msg.get("id")] = msg
        return found

    def until(self, predicate, timeout: float = EVENT_TIMEOUT_S) -> dict:
        """The first message from now on that satisfies `predicate`."""
        import time

        deadline = time.monotonic() + timeout
        while True:
            msg = self.messages.get(timeout=max(0.01, deadline - time.monotonic()))  # queue.Empty: failed
            if predicate(msg):
                return msg

    def wait_exit(self, timeout: float = 30.0) -> tuple[int | None, float]:
        """(exit code or None if still running after `timeout`, seconds it took)."""
        import subprocess
        import time

        t0 = time.monotonic()
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            rc = None
        elapsed = time.monotonic() - t0
        if rc is not None:
            self._stderr_thread.join(10)
        return rc, elapsed

    def initialize(self, options: dict | None = None) -> None:
        self.request(0, "initialize", {"processId": None, "rootUri": None, "capabilities": {
            "textDocument": {"inlineCompletion": {}}, "window": {"workDoneProgress": True}},
            "initializationOptions": options if options is not None else {"maxHoleTokens": 8}})
        answer = self.responses({0}).get(0)
        assert answer is not None and "result" in answer, answer
        self.notify("initialized", {})

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
