"""`diffill`, the console script (lsp_server/cli.py): the server's commands here, the engine's forwarded."""

from __future__ import annotations

import subprocess
import sys

from tests import REPO


def diffill(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lsp_server.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def test_help_lists_the_servers_and_the_engines_commands():
    r = diffill("--help")
    assert r.returncode == 0
    assert "serve" in r.stdout and "bench --lsp" in r.stdout and "fill FILE --at" in r.stdout


def test_engine_commands_are_forwarded():
    r = diffill("fill", "no-such-file.py", "--at", "1:1")
    assert r.returncode == 2 and "cannot read" in r.stderr
    r = diffill("frobnicate")
    assert r.returncode == 2 and "serve" in r.stderr  # the usage it prints is the console script's


def test_serve_help():
    r = diffill("serve", "--help")
    assert r.returncode == 0 and "--tcp HOST:PORT" in r.stdout


def test_bench_lsp_times_keystrokes_through_the_server():
    r = diffill("bench", "--lsp", "--model", "tiny-random", "--iterations", "2", "--tokens", "200")
    assert r.returncode == 0, r.stderr
    assert "tiny-random" in r.stdout and "cold keystroke -> suggestion" in r.stdout and "cache hit" in r.stdout
    # time to first suggestion, the number a new user meets first (issue 14.10)
    [startup] = [line for line in r.stdout.splitlines() if line.startswith("process start → ready: ")]
    ready_ms, first_ms = (float(part.split(": ")[1].split(" ms")[0]) for part in startup.split("; "))
    assert 0 < ready_ms <= first_ms, startup
