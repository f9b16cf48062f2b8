"""The HumanEval-Infilling harness: sandboxed execution, problem selection, the evaluate loop, the CLI.

The data is read from ../shared/data (or $DIFFILL_HUMANEVAL_DIR); it is never copied into the repo,
so tests that need it skip where it is absent.
"""

from __future__ import annotations

import gzip
import json
import resource
import time
from pathlib import Path

import pytest

from infill_engine.pipeline.evaluate import (
    DATA_ENV,
    Problem,
    default_max_length,
    evaluate,
    load_problems,
    main,
    resolve_data,
    select_problems,
)
from infill_engine.pipeline.sandbox import KEEP_OUTPUT_CHARS, build_program, run_program, run_programs
from infill_engine.request import Candidate, InfillError, InfillRequest, InfillResult


def _data(kind: str) -> Path:
    try:
        return resolve_data(kind)
    except ValueError as e:
        pytest.skip(f"HumanEval-Infilling data not available: {e}")


@pytest.fixture(scope="module")
def single() -> list[Problem]:
    return load_problems(_data("single"))


@pytest.fixture(scope="module")
def multi_path() -> Path:
    return _data("multi")


def _by_id(problems: list[Problem], task_id: str) -> Problem:
    return next(p for p in problems if p.task_id == task_id)


def _program(p: Problem, completion: str) -> str:
    return build_program(p.prompt, completion, p.suffix, p.test, p.entry_point)


# ------------------------------------------------------------------------------ sandboxed execution


def test_canonical_solutions_pass(single: list[Problem], multi_path: Path) -> None:
    problems = select_problems(single, 5) + select_problems(load_problems(multi_path), 3, seed=1)
    outcomes = run_programs([_program(p, p.canonical_solution) for p in problems], workers=2)
    assert [(o.passed, o.reason) for o in outcomes] == [(True, "passed")] * len(problems)


def test_wrong_completion_fails_with_its_exception(single: list[Problem]) -> None:
    p = _by_id(single, "SingleLineInfilling/HumanEval/2/L0")  # truncate_number: return number % 1.0
    wrong = run_program(_program(p, "    return number // 1.0\n"))
    assert not wrong.passed and wrong.reason.startswith("AssertionError")
    undefined = run_program(_program(p, "    return fraction\n"))
    assert not undefined.passed and undefined.reason.startswith("NameError")
    broken = run_program(_program(p, "    return number %\n"))
    assert not broken.passed and broken.reason.startswith("SyntaxError")
    # an empty hole leaves a function without a body: still a failure, not a crash of the harness
    assert not run_program(_program(p, "")).passed


def test_infinite_loop_is_killed_with_its_children(single: list[Problem]) -> None:
    p = _by_id(single, "SingleLineInfilling/HumanEval/23/L0")  # strlen
    start = time.perf_counter()
    outcome = run_program(_program(p, "    while True:\n        pass\n"), timeout_s=1.0)
    assert (outcome.passed, outcome.reason) == (False, "timeout")
    assert time.perf_counter() - start < 4.0

    # A forked grandchild must die with the timed-out program (the whole process group is killed).
    forker = "import os, sys, time\npid = os.fork()\nif pid:\n    print(pid, flush=True)\ntime.sleep(60)\n"
    outcome = run_program(forker, timeout_s=1.0)
    assert outcome.reason == "timeout"
    grandchild = int(outcome.stdout.split()[0])
    deadline = time.time() + 5
    while time.time() < deadline and _alive(grandchild):
        time.sleep(0.05)
    assert not _alive(grandchild)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"  # a zombie is dead, only not yet reaped


def test_memory_bomb_hits_the_limit_not_the_test_process(single: list[Problem]) -> None:
    before = resource.getrlimit(resource.RLIMIT_AS)
    p = _by_id(single, "SingleLineInfilling/HumanEval/23/L0")
    for bomb in ("    x = bytearray(8 * 1024 ** 3)\n", "    x = [0] * 10 ** 9\n", "    x = 'a' * 10 ** 10\n"):
        outcome = run_program(_program(p, bomb + "    return len(string)\n"), memory_mb=256)
        assert (outcome.passed, outcome.reason) == (False, "memory limit"), bomb
    assert resource.getrlimit(resource.RLIMIT_AS) == before  # limits were set in the child only
    big = bytearray(300 * 1024 * 1024)  # more than the child's cap: this process is not limited
    assert len(big) == 300 * 1024 * 1024


def test_early_exit_is_not_a_pass(single: list[Problem]) -> None:
    # exit code 0 is not enough: the tests have to run to their end
    p = _by_id(single, "SingleLineInfilling/HumanEval/23/L0")
    for stop in ("import os; os._exit(0)", "import sys; sys.exit(0)", "exit()", "raise SystemExit"):
        outcome = run_program(_program(p, f"    {stop}\n"))
        assert not outcome.passed and outcome.reason.startswith("exit"), (stop, outcome)
    # at module level, before check() could run
    outcome = run_program(p.prompt + p.canonical_solution + p.suffix + "\nimport os\nos._exit(0)\n" + p.test)
    assert not outcome.passed


def test_program_runs_in_a_clean_throwaway_directory(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DIFFILL_TEST_SECRET", "do-not-leak")
    program = (
        "import os, sys\n"
        "open('pwned.txt', 'w').write('x')\n"
        "assert 'DIFFILL_TEST_SECRET' not in os.environ\n"
        "assert sys.stdin.read() == ''\n"  # stdin is closed: no waiting for input
        "print(os.getcwd())\n"
    )
    outcome = run_program(program)
    assert outcome.passed, outcome
    workdir = Path(outcome.stdout.strip())
    assert workdir != tmp_path and not workdir.exists()  # removed afterwards
    assert list(tmp_path.iterdir()) == []


def test_output_is_bounded() -> None:
    outcome = run_program("while True:\n    print('x' * 100000)\n", timeout_s=10)
    assert (outcome.passed, outcome.reason) == (False, "output/file size limit")
    assert len(outcome.stdout) <= KEEP_OUTPUT_CHARS


# ------------------------------------------------------------------------------ data and selection


def test_stratified_sample_spreads_over_tasks_and_nests(single: list[Problem]) -> None:
    s50 = select_problems(single, 50)
    assert len(s50) == 50 and len({p.task for p in s50}) == 50
    assert s50 == select_problems(single, 50)  # deterministic
    assert {p.task_id for p in s50} < {p.task_id for p in select_problems(single, 100)}  # nested
    assert select_problems(single, 50, seed=1) != s50
    s200 = select_problems(single, 200)
    assert len(s200) == 200 and len({p.task for p in s200}) == 164  # every task before any repeats
    assert [p.task for p in select_problems(single, 30, method="first")] == [p.task for p in single[:30]]
    order = {p.task_id: i for i, p in enumerate(single)}
    assert [order[p.task_id] for p in s50] == sorted(order[p.task_id] for p in s50)  # file order
    assert select_problems(single, None) == single


def test_data_shorthand_and_bad_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    row = {"task_id": "SingleLineInfilling/HumanEval/0/L0", "entry_point": "f", "prompt": "def f():\n",
           "suffix": "", "canonical_solution": "    return 1\n", "test": "def check(c):\n    assert c() == 1\n"}  # fmt: skip
    with gzip.open(tmp_path / "HumanEval-SingleLineInfilling.jsonl.gz", "wt") as f:
        f.write(json.dumps(row) + "\n")
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    path = resolve_data("single")
    assert path == tmp_path / "HumanEval-SingleLineInfilling.jsonl.gz"
    assert load_problems(path)[0].task == "HumanEval/0"
    assert default_max_length(path) == 32 and default_max_length("HumanEval-MultiLineInfilling.jsonl.gz") == 128
    with pytest.raises(ValueError, match="no such data file"):
        resolve_data(str(tmp_path / "missing.jsonl"))
    (tmp_path / "bad.jsonl").write_text('{"task_id": "x"}\n')
    with pytest.raises(ValueError, match="missing"):
        load_problems(tmp_path / "bad.jsonl")


# ------------------------------------------------------------------------------ the evaluate loop


class ScriptedEngine:
    """Stands in for the model where the test needs to choose the completion (the harness is real)."""

    name = "scripted"
    is_random = False

    def __init__(self, problems: list[Problem], complete) -> None:
        self.by_context = {(p.prompt, p.suffix): p for p in problems}
        self.complete = complete
        self.requests: list[InfillRequest] = []

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def infill(self, req: InfillRequest) -> InfillResult:
        self.requests.append(req)
        p = self.by_context[(req.prefix, req.suffix)]
        text = self.complete(p)
        if text is None:
            raise InfillError("prompt too long for this model")
        n = max(1, len(text.split()))
        return InfillResult([Candidate(text, [0.9] * n, -0.1)], forwards=2 * n,
                            hole_tokens=req.length or req.max_length, wall_ms=1.0)  # fmt: skip


def test_evaluate_scores_canonical_completions_as_all_passed(single: list[Problem], tmp_path: Path) -> None:
    engine = ScriptedEngine(single, lambda p: p.canonical_solution)
    out = tmp_path / "report.json"
    report = evaluate(engine, _data("single"), limit=6, length="oracle", progress=False, out=out, workers=2)
    assert (report["pass@1"], report["passed"], report["n"]) == (1.0, 6, 6)
    assert json.loads(out.read_text())["passed"] == 6
    # oracle length: each request is told the canonical solution's token count
    for req in engine.requests:
        assert req.length == engine.count_tokens(engine.by_context[(req.prefix, req.suffix)].canonical_solution)
    assert report["forwards_per_token"] == 2.0 and report["tokens_per_forward"] == 0.5


def test_evaluate_auto_length_hides_the_answer_and_counts_failures(single: list[Problem]) -> None:
    sample = select_problems(single, 4)
    wrong = {sample[0].task_id: "    return 12345\n", sample[1].task_id: None}  # a wrong line; an InfillError
    engine = ScriptedEngine(single, lambda p: wrong.get(p.task_id, p.canonical_solution))
    report = evaluate(engine, _data("single"), limit=4, progress=False)
    assert all(req.length is None and req.max_length == 32 for req in engine.requests)
    assert (report["passed"], report["n"], report["length"], report["max_length"]) == (2, 4, "auto", 32)
    recs = {r["task_id"]: r for r in report["problems"]}
    assert not recs[sample[0].task_id]["passed"]
    assert recs[sample[1].task_id]["reason"].startswith("infill error")


def test_evaluator_never_runs_model_output_in_process(single: list[Problem], monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    hostile = ["    import os; os._exit(0)\n", "    open('pwned.txt', 'w').write('x')\n",
               "    import os; os.chdir('/')\n", "    import sys; sys.modules.clear()\n"]  # fmt: skip
    sample = select_problems(single, len(hostile))
    by_id = {p.task_id: h for p, h in zip(sample, hostile)}
    report = evaluate(ScriptedEngine(single, lambda p: by_id[p.task_id]), _data("single"),
                      limit=len(hostile), progress=False)  # fmt: skip
    assert report["n"] == len(hostile) and report["passed"] == 0  # and we are still here
    assert Path.cwd() == tmp_path and list(tmp_path.iterdir()) == []


def _engine_class():
    try:
        from infill_engine.engine import Engine
    except ImportError:
        pytest.skip("infill_engine.engine is not there yet")
    return Engine


def test_evaluate_end_to_end_with_tiny_random_model(tmp_path: Path) -> None:
    engine = _engine_class().tiny_random()
    out = tmp_path / "eval.json"
    report = evaluate(engine, _data("single"), limit=3, max_length=16, progress=False, out=out)
    saved = json.loads(out.read_text())
    for key in ("pass@1", "n", "passed", "length", "data", "sampler", "forwards_per_token", "tokens_per_forward",
                "median_ms", "model", "problems"):  # fmt: skip
        assert key in saved, key
    assert saved["n"] == 3 and saved["data"] == "HumanEval-SingleLineInfilling.jsonl.gz"
    assert saved["model"] == engine.name and saved["model_is_random"] is True
    assert saved["sampler"]["strategy"] == "threshold"
    for rec in saved["problems"]:
        assert {"task_id", "passed", "reason", "completion", "forwards", "ms"} <= rec.keys()
        assert 1 <= rec["forwards"] <= rec["slots"] == 16 and rec["reason"]
    assert report["max_length"] == 16 and report["forwards"] >= 3
    assert report["forwards_per_token"] * report["tokens_per_forward"] == pytest.approx(1.0)
    oracle = evaluate(engine, _data("single"), limit=1, length="oracle", progress=False)
    assert [r["slots"] for r in oracle["problems"]] == [r["oracle_tokens"] for r in oracle["problems"]]


def test_cli_rejects_bad_input_cleanly(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["--data", str(tmp_path / "nope.jsonl.gz")]) == 2
    assert "no such data file" in capsys.readouterr().err
    assert main(["--data", "single", "--limit", "0"]) == 2
    assert "--limit" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--data", "single", "--length", "exact"])  # argparse: usage error


def test_cli_prints_pass_at_1_last(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    _engine_class()
    _data("single")
    out = tmp_path / "cli.json"
    rc = main(["--data", "single", "--limit", "1", "--max-length", "8", "--out", str(out), "--no-progress",
               "--workers", "1"])  # fmt: skip
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    report = json.loads(out.read_text())
    assert captured.out.strip().splitlines()[-1] == f"pass@1 = {report['pass@1']:.3f} ({report['passed']}/1)"
    assert report["n"] == 1 and report["max_length"] == 8
    if report["model_is_random"]:  # no trained weights bundled yet: the user is told
        assert "random (untrained) weights" in captured.err
