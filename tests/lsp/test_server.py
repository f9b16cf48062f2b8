"""The language server end to end: pytest-lsp drives `python -m lsp_server` over stdio.

Most tests share one server running Engine.tiny_random() (DIFFILL_MODEL=tiny-random):
random output, real plumbing.  Tests that need a fresh server (shutdown during work, a
client without inline completion, the bundled model) start their own.
"""

from __future__ import annotations

import asyncio
import time

import pytest
import pytest_lsp
from lsprotocol import types
from pygls.exceptions import JsonRpcContentModified, JsonRpcException, JsonRpcInvalidParams, JsonRpcRequestCancelled
from pytest_lsp import LanguageClient

from infill_engine.syntax import scopes, spans
from infill_engine.syntax.parse import Code
from tests.lsp.harness import (EVENT_TIMEOUT_S, all_edit_uris, apply_edits, change_doc, close, config, edits_for,
                               initialize, offsets, open_doc, position_of, send_raw, wait_until, SHADOW, SOURCE)

pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_lsp.fixture(config=config(), scope="module")
async def client(lsp_client: LanguageClient):
    lsp_client.init_result = await initialize(lsp_client, {"maxHoleTokens": 8, "candidates": 2})
    yield
    await lsp_client.shutdown_session()


def doc_id(uri: str) -> types.TextDocumentIdentifier:
    return types.TextDocumentIdentifier(uri=uri)


async def inline(client: LanguageClient, uri: str, position: types.Position, token=None) -> types.InlineCompletionList:
    return await client.text_document_inline_completion_async(types.InlineCompletionParams(
        text_document=doc_id(uri), position=position, work_done_token=token,
        context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Automatic)))


async def configure(client: LanguageClient, **settings) -> None:
    client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings={"diffill": settings}))
    await client.workspace_execute_command_async(types.ExecuteCommandParams(command="diffill.status"))  # a barrier


async def wait_for_progress(client: LanguageClient, token=None, timeout: float = EVENT_TIMEOUT_S) -> None:
    """Until a progress report (on `token`, or any) says some of a hole is filled."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        tokens = [token] if token is not None else list(client.progress_reports)
        for t in tokens:
            if any(isinstance(r, types.WorkDoneProgressReport) for r in client.progress_reports.get(t, [])):
                return
        await asyncio.sleep(0.01)
    raise AssertionError("no progress reported")


def full_range(text: str) -> types.Range:
    lines = text.split("\n")
    return types.Range(start=types.Position(line=0, character=0),
                       end=types.Position(line=len(lines) - 1, character=len(lines[-1])))


# -- capabilities ------------------------------------------------------------------------


async def test_capabilities_are_advertised(client: LanguageClient):
    caps = client.init_result.capabilities
    assert isinstance(caps.inline_completion_provider, types.InlineCompletionOptions)
    # completion is the fallback for clients without inline completion; this one has it
    assert caps.completion_provider is None
    assert caps.code_action_provider.resolve_provider is True
    assert set(caps.code_action_provider.code_action_kinds) == {"refactor.rewrite", "quickfix"}
    assert caps.rename_provider.prepare_provider is True
    assert set(caps.execute_command_provider.commands) == {
        "diffill.rewriteSelection", "diffill.fillBody", "diffill.repair", "diffill.suggestName",
        "diffill.toggle", "diffill.status"}
    assert caps.text_document_sync.change == types.TextDocumentSyncKind.Incremental
    assert caps.text_document_sync.open_close is True


async def test_status_notification_and_command(client: LanguageClient):
    await wait_until(lambda: client.statuses, "the first diffill/status")  # notifications arrive asynchronously
    # the model loads in the background from `initialize`: by `initialized` it may be loaded already
    assert client.statuses[0]["state"] in ("loading", "ready")
    await wait_until(lambda: any(s["state"] == "ready" for s in client.statuses), 'a "ready" status')
    ready = [s for s in client.statuses if s["state"] == "ready"]
    assert ready and ready[-1]["isRandom"] is True and "RANDOM WEIGHTS" in ready[-1]["model"]
    status = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="diffill.status"))
    assert status == {"enabled": True, "model": ready[-1]["model"], "device": "cpu", "isRandom": True, "state": "ready"}


# -- inline completion -------------------------------------------------------------------


async def test_inline_completion_mid_line(client: LanguageClient):
    uri = "file:///mid.py"
    open_doc(client, uri, SOURCE)
    cursor = position_of(SOURCE, "radius ** 2")
    result = await inline(client, uri, cursor)
    assert result.items, client.log_messages
    after = SOURCE[SOURCE.index("radius ** 2"):].split("\n")[0]
    for item in result.items:
        assert item.range.start == item.range.end == cursor  # an insertion at the cursor
        assert "\n" not in item.insert_text
        assert not item.insert_text.rstrip().endswith(after)  # never repeats what follows


async def test_inline_completion_on_a_blank_line_is_a_block_on_one_line_range(client: LanguageClient):
    uri = "file:///block.py"
    text = "def f(xs):\n    total = 0\n\n    return total\n"
    open_doc(client, uri, text)
    cursor = types.Position(line=2, character=0)
    result = await inline(client, uri, cursor)
    assert result.items
    for item in result.items:
        assert item.range.start.line == item.range.end.line == 2
        assert item.range.start.character <= 0 <= item.range.end.character


async def test_progress_is_reported_on_the_clients_token(client: LanguageClient):
    uri = "file:///progress.py"
    open_doc(client, uri, SOURCE)
    await configure(client, threshold=1.0)  # one token per step: several reports
    client.progress_reports.setdefault("tok-1", [])
    try:
        await inline(client, uri, position_of(SOURCE, "describe(\"circle\""), token="tok-1")
    finally:
        await configure(client, threshold=0.9)
    reports = client.progress_reports["tok-1"]
    assert isinstance(reports[0], types.WorkDoneProgressBegin)
    assert isinstance(reports[-1], types.WorkDoneProgressEnd)
    percents = [r.percentage for r in reports if isinstance(r, types.WorkDoneProgressReport)]
    assert percents and percents == sorted(percents) and percents[-1] == 100


async def test_cache_serves_the_suggestion_while_its_characters_are_typed(client: LanguageClient):
    uri = "file:///cache.py"
    text = "def f(x):\n    return x\n\nvalue = \n"
    open_doc(client, uri, text)
    cursor = position_of(text, "value = ", len("value = "))
    first = await inline(client, uri, cursor)
    assert first.items
    suggestion = first.items[0].insert_text
    change_doc(client, uri, 2, types.Range(start=cursor, end=cursor), suggestion[0])
    moved = types.Position(line=cursor.line, character=cursor.character + 1)
    t0 = time.perf_counter()
    second = await inline(client, uri, moved)
    assert second.items[0].insert_text == suggestion[1:]
    assert second.items[0].range.start == moved
    assert time.perf_counter() - t0 < 2.0


async def test_newer_inline_request_supersedes_the_older(client: LanguageClient):
    uri = "file:///supersede.py"
    open_doc(client, uri, SOURCE)
    await configure(client, threshold=1.0, maxHoleTokens=400)
    client.progress_reports.setdefault("older", [])
    try:
        older = asyncio.ensure_future(inline(client, uri, position_of(SOURCE, "\n\n\ndef todo", 1), token="older"))
        await wait_for_progress(client, "older")
        await configure(client, maxHoleTokens=8)
        newer = await inline(client, uri, position_of(SOURCE, "\n\n\ndef todo", 2))
        assert len((await older).items) == 0  # answered, empty: superseded
        assert len(newer.items) > 0
    finally:
        await configure(client, threshold=0.9, maxHoleTokens=8)


# -- completion fallback ------------------------------------------------------------------


@pytest.mark.asyncio(loop_scope="function")
async def test_client_without_inline_completion_gets_completion_items():
    lsp = await config().start()
    try:
        result = await initialize(lsp, {"maxHoleTokens": 8, "candidates": 2}, inline=False)
        assert result.capabilities.completion_provider is not None
        uri = "file:///noinline.py"
        open_doc(lsp, uri, SOURCE)
        cursor = position_of(SOURCE, "total = ", len("total = "))
        result = await lsp.text_document_completion_async(types.CompletionParams(
            text_document=doc_id(uri), position=cursor))
        assert result.is_incomplete and result.items
        for item in result.items:
            edit = item.text_edit
            assert edit.range.start.line == edit.range.end.line == cursor.line
            assert edit.range.start.character <= cursor.character <= edit.range.end.character
            assert item.detail.startswith("diffill") and edit.new_text
        # and its inline requests (Neovim 0.7 sends them unadvertised) are still answered
        inline_result = await inline(lsp, uri, cursor)
        assert inline_result.items
    finally:
        await close(lsp)


# -- code actions --------------------------------------------------------------------------


async def code_actions(client: LanguageClient, uri: str, rng: types.Range) -> dict[str, types.CodeAction]:
    actions = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=doc_id(uri), range=rng, context=types.CodeActionContext(diagnostics=[])))
    return {a.title: a for a in actions}


async def test_rewrite_resolves_to_an_edit_inside_the_widened_span(client: LanguageClient):
    uri = "file:///rewrite.py"
    open_doc(client, uri, SOURCE)
    start = SOURCE.index("pi * rad")
    rng = types.Range(start=position_of(SOURCE, "pi * rad"), end=position_of(SOURCE, "pi * rad", 6))
    offered = await code_actions(client, uri, rng)
    action = offered["diffill: Rewrite selection"]
    assert action.kind == types.CodeActionKind.RefactorRewrite and action.edit is None  # lazy
    resolved = await client.code_action_resolve_async(action)
    assert all_edit_uris(resolved.edit) == {uri}
    [edit] = edits_for(resolved.edit, uri)
    widened = spans.rewrite_span(Code(SOURCE, "python"), start, start + 6)
    assert offsets(SOURCE, edit.range) == widened
    status = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="diffill.status"))
    if not status["isRandom"]:
        assert spans.syntax_ok(Code(SOURCE, "python"), apply_edits(SOURCE, [edit]))


async def test_fill_body_and_repair_actions(client: LanguageClient):
    uri = "file:///fill.py"
    open_doc(client, uri, SOURCE)
    cursor = position_of(SOURCE, "pass")
    offered = await code_actions(client, uri, types.Range(start=cursor, end=cursor))
    assert "diffill: Fill in body" in offered and "diffill: Rewrite selection" not in offered
    resolved = await client.code_action_resolve_async(offered["diffill: Fill in body"])
    [edit] = edits_for(resolved.edit, uri)
    assert offsets(SOURCE, edit.range) == spans.body_span(Code(SOURCE, "python"), SOURCE.index("pass"))

    sel = types.Range(start=position_of(SOURCE, "total = "), end=position_of(SOURCE, "total = ", 20))
    offered = await code_actions(client, uri, sel)
    assert offered["diffill: Repair"].kind == types.CodeActionKind.QuickFix
    resolved = await client.code_action_resolve_async(offered["diffill: Repair"])
    [edit] = edits_for(resolved.edit, uri)
    assert edit.range == sel


async def test_code_action_kinds_filter(client: LanguageClient):
    uri = "file:///only.py"
    open_doc(client, uri, SOURCE)
    sel = types.Range(start=position_of(SOURCE, "total = "), end=position_of(SOURCE, "total = ", 20))
    actions = await client.text_document_code_action_async(types.CodeActionParams(
        text_document=doc_id(uri), range=sel,
        context=types.CodeActionContext(diagnostics=[], only=[types.CodeActionKind.QuickFix])))
    assert [a.title for a in actions] == ["diffill: Repair"]


async def test_resolve_of_a_stale_action_is_content_modified(client: LanguageClient):
    uri = "file:///stale.py"
    open_doc(client, uri, SOURCE)
    sel = types.Range(start=position_of(SOURCE, "total = "), end=position_of(SOURCE, "total = ", 20))
    action = (await code_actions(client, uri, sel))["diffill: Rewrite selection"]
    change_doc(client, uri, 2, types.Range(start=sel.start, end=sel.start), "# edit\n")
    with pytest.raises(JsonRpcException) as err:
        await client.code_action_resolve_async(action)
    assert err.value.code == JsonRpcContentModified.CODE
    action.data = {"uri": uri, "action": "rewrite"}  # not ours / malformed
    with pytest.raises(JsonRpcInvalidParams):
        await client.code_action_resolve_async(action)


async def test_commands_apply_edits_through_workspace_apply_edit(client: LanguageClient):
    uri = "file:///commands.py"
    open_doc(client, uri, SOURCE)
    before = len(client.applied_edits)
    cursor = client.protocol._converter.unstructure(position_of(SOURCE, "pass"))
    assert await client.workspace_execute_command_async(types.ExecuteCommandParams(
        command="diffill.fillBody", arguments=[uri, cursor])) is None
    await wait_until(lambda: len(client.applied_edits) > before, "workspace/applyEdit")
    applied = client.applied_edits[before]
    [edit] = edits_for(applied.edit, uri)
    assert offsets(SOURCE, edit.range) == spans.body_span(Code(SOURCE, "python"), SOURCE.index("pass"))
    with pytest.raises(JsonRpcException):
        await client.workspace_execute_command_async(types.ExecuteCommandParams(
            command="diffill.rewriteSelection", arguments=[uri]))


async def test_suggest_name_edits_only_occurrences(client: LanguageClient):
    uri = "file:///name.py"
    open_doc(client, uri, SHADOW)
    cursor = position_of(SHADOW, "count = 0")
    offered = await code_actions(client, uri, types.Range(start=cursor, end=cursor))
    action = offered["diffill: Suggest a name for `count`"]
    resolved = await client.code_action_resolve_async(action)
    if resolved.edit is None:  # the random model proposed no valid identifier; the user is told
        assert any("name" in m.message for m in client.messages)
        return
    edits = edits_for(resolved.edit, uri)
    expected = scopes.occurrences(Code(SHADOW, "python"), SHADOW.index("count = 0"))
    assert sorted(offsets(SHADOW, e.range) for e in edits) == expected


# -- rename ------------------------------------------------------------------------------


async def test_rename_edits_exactly_the_in_scope_occurrences(client: LanguageClient):
    uri = "file:///rename.py"
    open_doc(client, uri, SHADOW)
    cursor = position_of(SHADOW, "count += v", 2)
    prepared = await client.text_document_prepare_rename_async(types.PrepareRenameParams(
        text_document=doc_id(uri), position=cursor))
    assert prepared.placeholder == "count"
    edit = await client.text_document_rename_async(types.RenameParams(
        text_document=doc_id(uri), position=cursor, new_name="acc"))
    renamed = apply_edits(SHADOW, edits_for(edit, uri))
    assert renamed == SHADOW.replace("    count", "    acc").replace("count += v", "acc += v") \
        .replace("return count", "return acc")
    assert renamed.startswith("count = 10") and renamed.endswith("print(count)\n")
    with pytest.raises(JsonRpcInvalidParams):
        await client.text_document_rename_async(types.RenameParams(
            text_document=doc_id(uri), position=cursor, new_name="not valid"))
    none = await client.text_document_prepare_rename_async(types.PrepareRenameParams(
        text_document=doc_id(uri), position=position_of(SHADOW, "10")))
    assert none is None


# -- cancellation and concurrency ----------------------------------------------------------


async def test_cancel_request_answers_request_cancelled_and_stops_the_model(client: LanguageClient):
    uri = "file:///cancel.py"
    open_doc(client, uri, SOURCE)
    await configure(client, threshold=1.0, maxHoleTokens=400)
    client.progress_reports.setdefault("cancel-tok", [])
    try:
        params = types.InlineCompletionParams(
            text_document=doc_id(uri), position=position_of(SOURCE, "\n\n\ndef todo", 1), work_done_token="cancel-tok",
            context=types.InlineCompletionContext(trigger_kind=types.InlineCompletionTriggerKind.Invoked))
        t0 = time.perf_counter()
        pending = asyncio.ensure_future(
            client.protocol.send_request_async(types.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id="cancel-me"))
        await wait_for_progress(client, "cancel-tok")  # the model is denoising now
        client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="cancel-me"))
        with pytest.raises(JsonRpcRequestCancelled):
            await pending
        cancelled_after = time.perf_counter() - t0
    finally:
        await configure(client, threshold=0.9, maxHoleTokens=8)
    assert not any(isinstance(r, types.WorkDoneProgressReport) and r.percentage == 100
                   for r in client.progress_reports["cancel-tok"])
    # The worker stopped at its next step: a small request right after is not stuck
    # behind the remaining ~400 steps of the cancelled one.
    t1 = time.perf_counter()
    await inline(client, uri, position_of(SOURCE, "radius ** 2"))
    assert time.perf_counter() - t1 < max(3.0, 2 * cancelled_after)


async def test_cancelling_a_command_stops_its_model_call(client: LanguageClient):
    uri = "file:///cancel-command.py"
    open_doc(client, uri, SOURCE)
    await configure(client, threshold=1.0, maxHoleTokens=400)
    try:
        sel = client.protocol._converter.unstructure(
            types.Range(start=position_of(SOURCE, "def describe"), end=position_of(SOURCE, "def todo")))
        known = set(client.progress_reports)
        pending = asyncio.ensure_future(client.protocol.send_request_async(
            types.WORKSPACE_EXECUTE_COMMAND,
            types.ExecuteCommandParams(command="diffill.rewriteSelection", arguments=[uri, sel]), msg_id="cmd-1"))
        def reporting() -> bool:  # the server-created progress token reports: the model is at work
            fresh = [t for t in client.progress_reports if t not in known]
            return bool(fresh) and any(isinstance(r, types.WorkDoneProgressReport)
                                       for r in client.progress_reports[fresh[0]])

        await wait_until(reporting, "a progress report from the command")
        client.protocol.notify(types.CANCEL_REQUEST, types.CancelParams(id="cmd-1"))
        with pytest.raises(JsonRpcException) as err:
            await pending
        assert err.value.code == JsonRpcRequestCancelled.CODE
    finally:
        await configure(client, threshold=0.9, maxHoleTokens=8)
    t0 = time.perf_counter()
    await inline(client, uri, position_of(SOURCE, "radius ** 2"))
    assert time.perf_counter() - t0 < 3.0  # not queued behind the rest of the rewrite


@pytest.mark.asyncio(loop_scope="function")
async def test_server_keeps_answering_during_a_long_rewrite_and_shuts_down():
    lsp = await config().start()
    try:
        await initialize(lsp, {"maxHoleTokens": 400, "threshold": 1.0})
        uri, other = "file:///long.py", "file:///other.py"
        open_doc(lsp, uri, SOURCE)
        open_doc(lsp, other, SHADOW)
        sel = types.Range(start=position_of(SOURCE, "def describe"), end=position_of(SOURCE, "def todo"))
        action = (await code_actions(lsp, uri, sel))["diffill: Rewrite selection"]
        long_job = asyncio.ensure_future(lsp.code_action_resolve_async(action))
        await wait_for_progress(lsp)  # server-created progress token: the rewrite is running
        t0 = time.perf_counter()
        prepared = await lsp.text_document_prepare_rename_async(types.PrepareRenameParams(
            text_document=doc_id(other), position=position_of(SHADOW, "count")))
        status = await lsp.workspace_execute_command_async(types.ExecuteCommandParams(command="diffill.status"))
        assert prepared.placeholder == "count" and status["state"] == "busy"
        assert time.perf_counter() - t0 < 1.0
        assert not long_job.done()
        await lsp.shutdown_async(None)  # answered although the rewrite is still running
        with pytest.raises(JsonRpcException) as err:
            await long_job
        assert err.value.code in (JsonRpcRequestCancelled.CODE, JsonRpcContentModified.CODE)
        lsp.exit(None)
        await asyncio.wait_for(lsp._server.wait(), EVENT_TIMEOUT_S)
        assert lsp._server.returncode == 0
    finally:
        await close(lsp)


# -- bad input -----------------------------------------------------------------------------


async def test_unknown_document_and_out_of_range_positions_give_empty_results(client: LanguageClient):
    result = await inline(client, "file:///never-opened.py", types.Position(line=0, character=0))
    assert len(result.items) == 0
    uri = "file:///short.py"
    open_doc(client, uri, "x = 1\n")
    assert len((await inline(client, uri, types.Position(line=99, character=0))).items) == 0
    rng = types.Range(start=types.Position(line=50, character=0), end=types.Position(line=51, character=0))
    assert await code_actions(client, uri, rng) == {}
    assert await client.text_document_prepare_rename_async(types.PrepareRenameParams(
        text_document=doc_id(uri), position=types.Position(line=40, character=1))) is None
    messages = " ".join(m.message for m in client.log_messages)
    assert "not open" in messages and "past the end" in messages


async def test_unsupported_documents_are_ignored_with_a_reason(client: LanguageClient):
    cases = {
        "file:///big.py": ("python", "x = 1\n" * 1_800_000, "too large"),  # ~10 MB
        "file:///image.png": ("plaintext", "\x89PNG\x00\x00\x01binary", "binary"),
        "file:///notes.txt": ("plaintext", "just some prose\n", "no grammar"),
    }
    for uri, (language, text, reason) in cases.items():
        open_doc(client, uri, text, language)
        result = await inline(client, uri, types.Position(line=1, character=0))
        assert len(result.items) == 0
        assert any(reason in m.message for m in client.log_messages), reason
        assert await code_actions(client, uri, types.Range(start=types.Position(line=0, character=0),
                                                           end=types.Position(line=0, character=3))) == {}
    # the large document still syncs: an edit is accepted and the server stays up
    change_doc(client, "file:///big.py", 2, types.Range(start=types.Position(line=5, character=0),
                                                       end=types.Position(line=5, character=1)), "y")
    status = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="diffill.status"))
    assert status["enabled"]


async def test_malformed_params_get_invalid_params(client: LanguageClient):
    # Position.line must be an unsigned integer: the request cannot be decoded.
    with pytest.raises(JsonRpcInvalidParams):
        await send_raw(client, types.TEXT_DOCUMENT_INLINE_COMPLETION, {
            "textDocument": {"uri": "file:///x.py"}, "position": {"line": "zero", "character": -1},
            "context": {"triggerKind": 1}}, "bad-1")
    with pytest.raises(JsonRpcInvalidParams):
        await send_raw(client, types.TEXT_DOCUMENT_RENAME, {"textDocument": {}, "newName": 3}, "bad-2")
    with pytest.raises(JsonRpcException):
        await client.workspace_execute_command_async(types.ExecuteCommandParams(command="diffill.nope"))
    with pytest.raises(JsonRpcInvalidParams):
        await client.workspace_execute_command_async(types.ExecuteCommandParams(
            command="diffill.fillBody", arguments=["file:///x.py", {"line": "a"}]))
    # and the server still works
    status = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="diffill.status"))
    assert status["enabled"] is True


async def test_bad_settings_are_reported_by_key_and_ignored(client: LanguageClient):
    await configure(client, maxHoleTokens=0, threshold="high", features={"nope": True})
    text = " | ".join(m.message for m in client.messages)
    assert "diffill.maxHoleTokens" in text and "diffill.threshold" in text and "diffill.features.nope" in text
    assert all(m.type == types.MessageType.Warning for m in client.messages if "diffill." in m.message)


async def test_settings_are_pulled_when_the_notification_carries_none(client: LanguageClient):
    client.set_configuration({"enabled": False}, section="diffill")
    try:
        client.workspace_did_change_configuration(types.DidChangeConfigurationParams(settings=None))
        deadline = time.monotonic() + EVENT_TIMEOUT_S
        while time.monotonic() < deadline:  # the server asks workspace/configuration, then applies the answer
            status = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="diffill.status"))
            if not status["enabled"]:
                break
            await asyncio.sleep(0.02)
        assert status["enabled"] is False and status["state"] == "disabled"
    finally:
        await configure(client, enabled=True)


async def test_toggle_and_feature_switches(client: LanguageClient):
    uri = "file:///toggle.py"
    open_doc(client, uri, SOURCE)
    off = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="diffill.toggle", arguments=[False]))
    assert off == {"enabled": False}
    assert len((await inline(client, uri, position_of(SOURCE, "radius ** 2"))).items) == 0
    on = await client.workspace_execute_command_async(types.ExecuteCommandParams(command="diffill.toggle"))
    assert on == {"enabled": True}
    await configure(client, features={"rename": False})
    try:
        assert await client.text_document_prepare_rename_async(types.PrepareRenameParams(
            text_document=doc_id(uri), position=position_of(SOURCE, "total"))) is None
    finally:
        await configure(client, features={"rename": True})


async def test_unlikely_hints_are_published_as_hint_diagnostics(client: LanguageClient):
    uri = "file:///hints.py"
    await configure(client, features={"unlikelyHints": True})
    try:
        open_doc(client, uri, SOURCE)
        await wait_until(lambda: client.diagnostics.get(uri), "hint diagnostics")
        diagnostics = client.diagnostics.get(uri)
        assert diagnostics  # random weights find everything unlikely
        lines = SOURCE.split("\n")
        for d in diagnostics:
            assert d.severity == types.DiagnosticSeverity.Hint and d.source == "diffill"
            assert d.range.start.line == d.range.end.line and d.range.end.character <= len(lines[d.range.end.line])
    finally:
        await configure(client, features={"unlikelyHints": False})
    await wait_until(lambda: client.diagnostics.get(uri) is not None and len(client.diagnostics[uri]) == 0,
                     "the hints to be withdrawn")
    assert len(client.diagnostics.get(uri)) == 0  # switched off: cleared


# -- the bundled model ----------------------------------------------------------------------


@pytest.mark.asyncio(loop_scope="function")
async def test_inline_completion_with_the_bundled_model():
    lsp = await config(model=None).start()  # Engine.load(None): the bundled model
    try:
        await initialize(lsp, {"maxHoleTokens": 16, "candidates": 2})
        uri = "file:///bundled.py"
        text = "def add(a, b):\n    return \n\n\nprint(add(1, 2))\n"
        open_doc(lsp, uri, text)
        cursor = position_of(text, "return ", len("return "))
        result = await inline(lsp, uri, cursor)
        assert result.items, lsp.log_messages
        ok = []
        for item in result.items:
            assert item.range.start.line == item.range.end.line == cursor.line
            assert item.insert_text
            spliced = apply_edits(text, [types.TextEdit(range=item.range, new_text=item.insert_text)])
            ok.append(spans.syntax_ok(Code(text, "python"), spliced))
        # the spliced file keeps parsing, or that candidate is ranked after every one that does
        assert ok == sorted(ok, reverse=True)
        status = await lsp.workspace_execute_command_async(types.ExecuteCommandParams(command="diffill.status"))
        assert "diffill-small" in status["model"]

        # A model that cannot be loaded: an error status and message, empty answers, no crash.
        await configure(lsp, model="/no/such/model")
        # the status and the message are two notifications: wait for both
        await wait_until(lambda: lsp.statuses and lsp.statuses[-1]["state"] == "error" and lsp.messages,
                         'an "error" status and its message')
        assert lsp.statuses[-1]["state"] == "error" and "/no/such/model" in lsp.statuses[-1]["message"]
        assert any(m.type == types.MessageType.Error and "/no/such/model" in m.message for m in lsp.messages)
        change_doc(lsp, uri, 2, types.Range(start=cursor, end=cursor), "a")
        assert len((await inline(lsp, uri, types.Position(line=cursor.line, character=cursor.character + 1))).items) == 0
        await configure(lsp, model=None)  # back to the bundled model
        change_doc(lsp, uri, 3, types.Range(start=cursor, end=cursor), "b")
        assert (await inline(lsp, uri, types.Position(line=cursor.line, character=cursor.character + 1))).items
    finally:
        await close(lsp)


@pytest.mark.asyncio(loop_scope="function")
async def test_bundled_model_best_inline_suggestion_keeps_the_file_parsing():
    lsp = await config(model=None).start()
    try:
        await initialize(lsp, {"maxHoleTokens": 16, "candidates": 2})
        uri = "file:///quality.py"
        text = "def add(a, b):\n    return \n\n\nprint(add(1, 2))\n"
        open_doc(lsp, uri, text)
        result = await inline(lsp, uri, position_of(text, "return ", len("return ")))
        assert result.items
        best = result.items[0]
        spliced = apply_edits(text, [types.TextEdit(range=best.range, new_text=best.insert_text)])
        assert spans.syntax_ok(Code(text, "python"), spliced) and best.insert_text.strip()
    finally:
        await close(lsp)
