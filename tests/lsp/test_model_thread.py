"""The model thread's order: what the user waits for runs before background work, and a
background job in progress gives way to a keystroke (issue 14.6)."""

from __future__ import annotations

import threading

import pytest

from infill_engine.engine import Engine
from infill_engine.request import InfillCancelled
from lsp_server.features.hints import unlikely_hints
from lsp_server.model_worker import BACKGROUND, FOREGROUND, THREADS_ENV, ModelThread, cpu_threads
from tests.lsp.harness import SOURCE

WAIT_S = 60  # generous: a limit for a broken test, not a speed target


def test_foreground_jobs_run_before_queued_background_jobs() -> None:
    thread = ModelThread("test-model")
    gate, started, order = threading.Event(), threading.Event(), []

    def blocker() -> None:
        started.set()
        gate.wait(WAIT_S)

    first = thread.submit(blocker, FOREGROUND)
    assert started.wait(WAIT_S)
    futures = [
        thread.submit(lambda name=name: order.append(name), priority)
        for name, priority in [("hint-1", BACKGROUND), ("key-1", FOREGROUND), ("hint-2", BACKGROUND),
                               ("key-2", FOREGROUND)]
    ]  # fmt: skip
    gate.set()
    first.result(WAIT_S)
    for fut in futures:
        fut.result(WAIT_S)
    assert order == ["key-1", "key-2", "hint-1", "hint-2"]


def test_a_keystroke_stops_the_background_job_in_progress() -> None:
    thread = ModelThread("test-model")
    cancel, running, steps = threading.Event(), threading.Event(), []

    def background() -> str:
        running.set()
        for step in range(10_000):  # a long job that polls its flag between steps, as the engine does
            if cancel.is_set():
                return f"gave way after {step} steps"
            steps.append(step)
            threading.Event().wait(0.001)
        return "ran to its end"

    bg = thread.submit(background, BACKGROUND, cancel)
    assert running.wait(WAIT_S)
    key = thread.submit(lambda: "suggestion", FOREGROUND, threading.Event())
    assert key.result(WAIT_S) == "suggestion"
    assert bg.result(WAIT_S).startswith("gave way") and len(steps) < 10_000
    # a foreground job does not stop another foreground job
    other_cancel = threading.Event()
    gate = threading.Event()
    fg = thread.submit(lambda: gate.wait(WAIT_S), FOREGROUND, other_cancel)
    later = thread.submit(lambda: None, FOREGROUND)
    gate.set()
    fg.result(WAIT_S)
    later.result(WAIT_S)
    assert not other_cancel.is_set()


def test_a_failing_job_reports_its_exception_and_the_thread_goes_on() -> None:
    thread = ModelThread("test-model")
    with pytest.raises(ZeroDivisionError):
        thread.submit(lambda: 1 / 0).result(WAIT_S)
    assert thread.submit(lambda: 42).result(WAIT_S) == 42


def test_cancellable_scoring_matches_the_batched_one_and_stops() -> None:
    engine = Engine.tiny_random()
    start, end = SOURCE.index("def "), min(len(SOURCE), SOURCE.index("def ") + 300)
    prefix, middle, suffix = SOURCE[:start], SOURCE[start:end], SOURCE[end:]
    batched = engine.score(prefix, middle, suffix)
    stepped = engine.score(prefix, middle, suffix, cancel=lambda: False)
    assert [t.text for t in stepped] == [t.text for t in batched]
    assert [t.probability for t in stepped] == pytest.approx([t.probability for t in batched], rel=1e-4, abs=1e-6)
    polls = []
    with pytest.raises(InfillCancelled):
        engine.score(prefix, middle, suffix, cancel=lambda: polls.append(1) or len(polls) > 1)
    assert len(polls) == 2  # stopped before its second forward
    with pytest.raises(InfillCancelled):
        unlikely_hints(engine, SOURCE, start, end, cancel=lambda: True)


@pytest.mark.parametrize("cores, threads", [(1, 1), (2, 2), (4, 2), (8, 4), (16, 8)])
def test_torch_threads_half_the_cores_but_two_where_there_are(cores, threads, monkeypatch) -> None:
    monkeypatch.delenv(THREADS_ENV, raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    assert cpu_threads() == threads
    monkeypatch.setenv(THREADS_ENV, "3")
    assert cpu_threads() == 3  # the user's setting wins
