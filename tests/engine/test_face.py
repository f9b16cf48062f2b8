"""The engine package's face and its place at the bottom of the stack."""

from __future__ import annotations

import re
import subprocess
import sys

from tests import REPO


def test_importing_the_face_does_not_import_torch():
    probe = ("import sys, infill_engine; from infill_engine import InfillRequest, InfillOptions, SamplerSettings; "
             "assert 'torch' not in sys.modules; infill_engine.Engine; assert 'torch' in sys.modules")
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0, r.stderr


def test_the_engine_never_imports_the_server():
    imports_server = re.compile(r"^\s*(from|import)\s+lsp_server\b", re.M)
    offenders = [str(p.relative_to(REPO)) for p in (REPO / "infill_engine").rglob("*.py")
                 if imports_server.search(p.read_text())]
    assert offenders == []
