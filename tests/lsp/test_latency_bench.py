"""`diffill bench --lsp --load N`: idle and loaded figures from one run, burners gone afterwards.

The figures themselves are the benchmark's output, not asserted here (speed goals are never
timed tests); this checks that both passes ran the same keystrokes through the real server.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lsp_server.latency_bench import main


def _children() -> set[int]:
    me, found = str(os.getpid()), set()
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                stat = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if stat[1] == me and stat[0] != "Z":
                found.add(int(name))
    return found


def test_load_pass_reports_next_to_idle_and_stops_its_burners(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    before = _children()
    out = tmp_path / "bench.json"
    assert main(["--model", "tiny-random", "--iterations", "3", "--load", "1", "--json", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert summary["load"] == 1
    assert summary["cold_n"] == summary["loaded_cold_n"] == 3  # the same keystrokes, none from the cache
    assert summary["loaded_cold_p50_ms"] > 0 and summary["loaded_cold_p50_ratio"] > 0
    printed = capsys.readouterr().out
    assert "loaded (1 CPU burner" in printed and "loaded / idle, cold: p50 x" in printed
    assert _children() <= before  # the burners (and the server) are gone


def test_load_out_of_range_is_refused() -> None:
    assert main(["--load", "-1"]) == 2
    assert main(["--load", str(4 * (os.cpu_count() or 1) + 1)]) == 2
