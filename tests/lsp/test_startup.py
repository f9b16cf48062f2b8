"""Time to first suggestion (issue 14.10): the model starts loading at `initialize`, and the
bundled model's path imports only what it needs (no transformers: seconds on a slow host)."""

from __future__ import annotations

import sys
import time

from tests.lsp.harness import EVENT_TIMEOUT_S, RawServer


def status(raw: RawServer, msg_id, seen: list[dict]) -> str:
    """The server's state, by asking; every message received meanwhile goes into `seen`."""
    raw.request(msg_id, "workspace/executeCommand", {"command": "diffill.status", "arguments": []})
    answer = raw.until(lambda m: seen.append(m) or (m.get("id") == msg_id and "method" not in m))
    return answer["result"]["state"]


def test_the_model_loads_from_initialize_without_waiting_for_initialized():
    # A client may take its time between the answer to `initialize` and `initialized`
    # (an editor opening its windows): the load runs meanwhile.
    raw = RawServer(model=None, command=[sys.executable, "-X", "importtime", "-m", "lsp_server"])
    try:
        raw.request(0, "initialize", {"processId": None, "rootUri": None, "capabilities": {}})
        assert "result" in raw.responses({0})[0]
        deadline, asked, seen = time.monotonic() + EVENT_TIMEOUT_S, 0, []
        while (state := status(raw, asked, seen)) == "loading" and time.monotonic() < deadline:
            asked += 1
            time.sleep(0.1)
        assert state == "ready", state  # main: "loading" until `initialized`
        assert not any(m.get("method") == "diffill/status" for m in seen), "a notification before `initialized`"
        raw.notify("initialized", {})
        assert raw.until(lambda m: m.get("method") == "diffill/status")["params"]["state"] == "ready"
    finally:
        raw.kill()
        raw._stderr_thread.join(10)
    # -X importtime lists every module the server imported: the bundled model needs torch,
    # safetensors and tokenizers, never transformers.
    imported = {line.rsplit("|", 1)[-1].strip() for line in raw.stderr.decode(errors="replace").splitlines()
                if line.startswith("import time:")}
    assert "torch" in imported and not any(m.split(".")[0] == "transformers" for m in imported)
