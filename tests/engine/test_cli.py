"""`diffill` as a user runs it: a subprocess on real files with the bundled model."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests import REPO

DEMO = REPO / "examples" / "demo.py"


def diffill(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "infill_engine.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def test_fill_at_prints_only_the_inserted_text_and_steps_on_stderr():
    r = diffill("fill", str(DEMO), "--at", "13:1", "--show-steps", "--max-length", "16")
    assert r.returncode == 0, r.stderr
    assert "--- step 1 ---" in r.stderr
    assert "Traceback" not in r.stderr
    # stdout is exactly the text to insert: no banner, no step output.
    assert "step" not in r.stdout and r.stdout.strip()


def test_fill_select_rewrites_the_widened_block_only(tmp_path):
    r = diffill("fill", str(DEMO), "--select", "6:7", "--max-length", "24")
    assert r.returncode == 0, r.stderr
    assert r.stdout.endswith("\n") and r.stdout.strip()


@pytest.mark.parametrize("args,message", [
    (["--at", "99:1"], "line 99 is outside"),
    (["--at", "1:500"], "column 500 is outside"),
    (["--at", "nonsense"], "must look like N:M"),
    (["--select", "8:3"], "must satisfy"),
    (["--at", "3:1", "--length", "0"], "hole length"),
])
def test_bad_positions_get_one_line_errors(args, message):
    r = diffill("fill", str(DEMO), *args)
    assert r.returncode == 2
    assert message in r.stderr and "Traceback" not in r.stderr


def test_missing_and_binary_files(tmp_path):
    r = diffill("fill", str(tmp_path / "nope.py"), "--at", "1:1")
    assert r.returncode == 2 and "cannot read" in r.stderr
    binary = tmp_path / "blob.bin"
    binary.write_bytes(b"\x7fELF\x00\x01\x02" * 100)
    r = diffill("fill", str(binary), "--at", "1:1")
    assert r.returncode == 2 and "binary" in r.stderr


def test_non_utf8_and_unknown_language_still_fill(tmp_path):
    latin = tmp_path / "old.py"
    latin.write_bytes("name = 'caf\xe9'\nvalue = \n".encode("latin-1"))
    r = diffill("fill", str(latin), "--at", "2:9", "--max-length", "8")
    assert r.returncode == 0 and "not valid UTF-8" in r.stderr
    other = tmp_path / "notes.xyz"
    other.write_text("alpha\nbeta\ngamma\n")
    r = diffill("fill", str(other), "--select", "2:2", "--max-length", "8")
    assert r.returncode == 0, r.stderr


def test_unknown_command_and_help():
    assert diffill("frobnicate").returncode == 2
    r = diffill("--help")
    assert r.returncode == 0 and "fill FILE --at" in r.stdout


def test_bench_prints_ratios_side_by_side():
    r = diffill("bench", "--context", "256", "--repeats", "2", "--holes", "2", timeout=600)
    assert r.returncode == 0, r.stderr
    assert "cached step" in r.stdout and "x;" in r.stdout
    assert "threshold 0.9" in r.stdout and "forwards/token" in r.stdout
    assert "prefill fp32" in r.stdout and "same greedy completion on" in r.stdout  # precisions side by side


def test_bench_train_prints_the_four_ways_side_by_side():
    r = diffill("bench", "--train", "--shape", "32,1,2,2,32", "--repeats", "5", timeout=300)
    assert r.returncode == 0, r.stderr
    for way in ("fp32 masked", "fp32 split", "bf16 masked", "bf16 split"):
        assert way in r.stdout
