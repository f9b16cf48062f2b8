"""The VS Code extension (editors/vscode): its settings mirror the server's, it builds with tsc, it
packages into a .vsix, and a headless Node client starts the real server exactly as the extension
configures it and goes initialize -> didOpen -> inlineCompletion -> codeAction -> resolve -> commands
(editors/vscode/src/test/e2e.ts). VS Code itself cannot run here.

Node.js and npm are needed (editors/ci-setup.sh installs them and runs `npm ci` + `npm run compile`);
without them the Node tests skip, saying so.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from lsp_server.settings import Features, Server, Settings
from tests import REPO

EXTENSION = REPO / "editors" / "vscode"
MANIFEST = json.loads((EXTENSION / "package.json").read_text())
PROPERTIES: dict[str, dict[str, Any]] = MANIFEST["contributes"]["configuration"]["properties"]
# Settings only the extension reads (how to start the server, LSP tracing).
CLIENT_ONLY = {"diffill.server.command", "diffill.server.pythonPath", "diffill.server.env", "diffill.trace.server"}


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _server_keys() -> dict[str, Any]:
    """`diffill.<camelCase key>` -> default, from the server's own settings dataclasses."""
    keys = {f"diffill.{_camel(f.name)}": getattr(Settings(), f.name) for f in fields(Settings)
            if f.name not in ("features", "server")}
    keys = {key: list(value) if isinstance(value, tuple) else value for key, value in keys.items()}  # JSON arrays
    keys.update({f"diffill.features.{_camel(f.name)}": getattr(Features(), f.name) for f in fields(Features)})
    keys.update({f"diffill.server.{f.name}": getattr(Server(), f.name) for f in fields(Server)})
    return keys


def test_contributed_settings_mirror_the_server() -> None:
    server = _server_keys()
    extension = {key: schema.get("default") for key, schema in PROPERTIES.items() if key not in CLIENT_ONLY}
    assert set(extension) == set(server), "package.json's diffill.* settings differ from lsp_server.settings"
    for key, default in server.items():
        assert extension[key] == default, f"{key}: package.json default {extension[key]!r}, server {default!r}"


def test_manifest_commands_do_not_collide_with_server_commands() -> None:
    # vscode-languageclient registers each server command id as a VS Code command; a second
    # registration of the same id by the extension would fail at activation.
    ids = {c["command"] for c in MANIFEST["contributes"]["commands"]}
    server_ids = {"diffill.rewriteSelection", "diffill.fillBody", "diffill.repair", "diffill.suggestName",
                  "diffill.toggle", "diffill.status"}
    assert not ids & server_ids
    assert {"diffill.action.rewriteSelection", "diffill.action.fillBody", "diffill.action.repair",
            "diffill.action.suggestName", "diffill.action.toggle"} <= ids
    assert MANIFEST["main"] == "./out/extension.js"
    dependency = MANIFEST["dependencies"]["vscode-languageclient"].lstrip("^~")
    assert tuple(int(p) for p in dependency.split(".")[:3]) >= (10, 0, 1)  # inline completion by default


@pytest.fixture(scope="module")
def built() -> Path:
    """The extension with its npm packages installed and compiled (tsc) from the current sources."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.skip("Node.js/npm are not installed (editors/ci-setup.sh installs them and builds the extension)")
    if not (EXTENSION / "node_modules" / ".package-lock.json").exists():
        subprocess.run([npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=EXTENSION, check=True,
                       timeout=600, capture_output=True)
    compiled = subprocess.run([npm, "run", "--silent", "compile"], cwd=EXTENSION, capture_output=True, text=True,
                              timeout=300)
    assert compiled.returncode == 0, f"tsc failed:\n{compiled.stdout}\n{compiled.stderr}"
    return EXTENSION


def _node(script: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([shutil.which("node") or "node", "-e", script], cwd=cwd, capture_output=True, text=True,
                          timeout=60)


def test_server_launch_follows_the_settings(built: Path) -> None:
    script = r"""
const s = require("./out/settings.js");
const reader = (values) => ({ get: (key) => values[key] });
const out = {
  defaults: s.serverLaunch(reader({}), {}),
  python: s.serverLaunch(reader({ "server.pythonPath": "/venv/bin/python", "server.command": ["x"] }), { A: "1" }),
  command: s.serverLaunch(reader({ "server.command": ["diffill", "serve", "--log-level", "INFO"], "server.env": { DIFFILL_MODEL: "tiny-random" } }), { A: "1" }),
  settings: s.serverSettings(reader({ model: "", "features.repair": false, maxHoleTokens: 64 })),
};
for (const bad of [[], [3], ""]) {
  try { s.serverLaunch(reader({ "server.command": bad }), {}); out.accepted = bad; }
  catch (e) { (out.errors = out.errors || []).push(e.constructor.name + ": " + e.message); }
}
console.log(JSON.stringify(out));
"""
    proc = _node(script, built)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert (out["defaults"]["command"], out["defaults"]["args"]) == ("diffill", ["serve"])
    assert (out["python"]["command"], out["python"]["args"]) == ("/venv/bin/python", ["-m", "lsp_server"])
    assert out["python"]["env"] == {"A": "1"}
    assert out["command"]["args"] == ["serve", "--log-level", "INFO"]
    assert out["command"]["env"] == {"A": "1", "DIFFILL_MODEL": "tiny-random"}
    assert "accepted" not in out and len(out["errors"]) == 3
    assert all(e.startswith("LaunchConfigError: diffill.server.command") for e in out["errors"])
    settings = out["settings"]
    assert settings["model"] is None  # an empty model setting means the bundled model
    assert settings["maxHoleTokens"] == 64 and settings["features"]["repair"] is False
    assert set(settings) == {k.split(".")[1] for k in _server_keys()}


def test_headless_client_drives_the_real_server(built: Path, tmp_path: Path) -> None:
    user_settings = {"diffill.server.pythonPath": sys.executable, "diffill.maxHoleTokens": 8}
    env = dict(os.environ)
    env["DIFFILL_MODEL"] = "tiny-random"  # plumbing, not model quality, is under test here
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    proc = subprocess.run(
        [shutil.which("node") or "node", str(built / "out" / "test" / "e2e.js"),
         "--settings", json.dumps(user_settings), "--cwd", str(tmp_path), "--timeout", "240"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, f"e2e failed:\n{proc.stderr[-6000:]}"
    report = json.loads(proc.stdout)
    assert report["launch"] == {"command": sys.executable, "args": ["-m", "lsp_server"]}
    states = [s["state"] for s in report["statuses"]]
    assert "ready" in states and "disabled" in states and "error" not in states
    assert report["status"]["isRandom"] is True
    assert report["inline"] and all(item["text"] for item in report["inline"])
    assert {"diffill: Rewrite selection", "diffill: Fill in body", "diffill: Repair"} <= set(report["codeActions"])
    assert report["toggledOffItems"] == 0
    # The resolved rewrite replaced the statement in greet() and nothing else.
    before, after = report["rewrite"]["before"].split("\n"), report["rewrite"]["after"].split("\n")
    assert after[:7] == before[:7] and after[-4:] == before[-4:]
    complaints = [m["message"] for m in report["messages"] if "diffill." in m["message"] or "settings" in m["message"]]
    assert complaints == [], "the server warned about the settings the extension sent"


def test_vsix_packages(built: Path, tmp_path: Path) -> None:
    """`vsce package` works offline and the .vsix holds the compiled extension and its runtime packages."""
    vsce = built / "node_modules" / ".bin" / "vsce"
    if not vsce.exists():
        pytest.fail("@vscode/vsce is missing from node_modules: run npm ci in editors/vscode")
    target = tmp_path / "diffill.vsix"
    proc = subprocess.run([str(vsce), "package", "--skip-license", "--allow-missing-repository", "--out", str(target)],
                          cwd=built, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    names = set(zipfile.ZipFile(target).namelist())
    assert {"extension/package.json", "extension/out/extension.js", "extension/out/settings.js",
            "extension/node_modules/vscode-languageclient/package.json"} <= names
    assert not any(n.startswith(("extension/src/", "extension/out/test/")) for n in names)
