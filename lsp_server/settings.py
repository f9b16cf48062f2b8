"""The server's user settings: one typed object, validated once.

Settings arrive as camelCase JSON from `initializationOptions` and from
`workspace/didChangeConfiguration` ({"settings": {"diffill": {...}}}).  Each key is checked
on its own, so one bad value is reported (naming the key and the reason) and the
previous value of that key stays, while the good keys next to it still take effect.

This module is the server's settings contract: the editors send these keys in camelCase
(maxHoleTokens, features.fillBody, ...), and their defaults are the ones here; the
infilling defaults themselves (hole budget, threshold, candidates) are the engine's
`InfillOptions` / `SamplerSettings`, and `Settings.infill` hands them back as one object.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from typing import Any

from infill_engine.request import InfillOptions, SamplerSettings

DEVICE_PATTERN = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")


@dataclass(frozen=True)
class Features:
    inline_completion: bool = True
    completion: bool = True
    rewrite: bool = True
    fill_body: bool = True
    repair: bool = True
    suggest_name: bool = True
    rename: bool = True
    unlikely_hints: bool = False  # off by default: it runs the model after every edit


@dataclass(frozen=True)
class Server:
    """diffill.server.url / .token: infill on a shared `diffill serve --http` instead of a local model."""

    url: str | None = None
    token: str | None = None  # also $DIFFILL_SERVER_TOKEN, which keeps it out of settings files


@dataclass(frozen=True)
class Settings:
    enabled: bool = True
    model: str | None = None  # local path or hub id; None = the bundled model
    device: str = "cpu"
    allow_network: bool = False
    trust_remote_code: bool = False
    max_hole_tokens: int = InfillOptions.max_length
    threshold: float = SamplerSettings.threshold
    candidates: int = InfillOptions.candidates
    debounce_ms: int = 150  # editors that debounce as-you-type requests wait this long
    # The hole lengths (tokens) an auto-length suggestion tries, one batch row each: fewer than
    # the engine's default, for keystroke latency.  On 300 held-out lines these find 31 exact
    # lines where every length from 2 to 28 finds 34, at a third of the row-steps.
    lengths: tuple[int, ...] = (2, 3, 4, 6, 9, 14, 24, 40)
    # Model steps per suggestion; near the cap each step commits more tokens.  On the same 300
    # lines 8 steps found as many exact lines as no cap (33, the v2.1 model) and cut the longest
    # row from 40 forwards to 8: most of a suggestion's latency.
    max_steps: int = 8
    # Every code action's model work is bounded three ways, so none runs for minutes:
    action_max_tokens: int = 256  # the most tokens an action's hole may take (a body, a rewrite)
    action_max_steps: int = 64  # model steps per candidate; near the cap each step commits more tokens
    action_timeout_ms: int = 30_000  # stopped (and the user told) after this long, queueing included
    # A command (workspace/executeCommand: eglot runs every action this way) answers when its
    # edit is ready or after this long, whichever is first; a late edit follows as
    # workspace/applyEdit, with $/progress meanwhile.  Below a client's request timeout (10 s
    # in eglot); 0 answers at once.
    command_reply_ms: int = 2_000
    features: Features = field(default_factory=Features)
    server: Server = field(default_factory=Server)

    def engine_key(self) -> tuple:
        """What identifies a loaded engine: a change here means loading another one."""
        return (self.model, self.device, self.allow_network, self.trust_remote_code, self.server)

    @property
    def infill(self) -> InfillOptions:
        """What every model feature starts from (each adjusts its own budget from here)."""
        return InfillOptions(max_length=self.max_hole_tokens, candidates=self.candidates,
                             sampler=SamplerSettings(threshold=self.threshold, max_steps=self.max_steps),
                             lengths=self.lengths)

    @property
    def action_infill(self) -> InfillOptions:
        """What the code actions start from: `infill`, within the action bounds."""
        return InfillOptions(max_length=min(self.max_hole_tokens, self.action_max_tokens), candidates=self.candidates,
                             sampler=SamplerSettings(threshold=self.threshold, max_steps=self.action_max_steps),
                             lengths=self.lengths)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(part.title() for part in rest)


def _check_bool(value: Any) -> str | None:
    return None if isinstance(value, bool) else "expected true or false"


def _check_int(low: int, high: int):
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return f"expected a whole number between {low} and {high}"
        if not low <= value <= high:
            return f"must be between {low} and {high}, got {value}"
        return None

    return check


def _check_threshold(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return "expected a number in (0, 1]"
    if not 0.0 < float(value) <= 1.0:
        return f"must be greater than 0 and at most 1, got {value}"
    return None


def _check_lengths(value: Any) -> str | None:
    if not isinstance(value, list) or len(value) > 32 or any(
            isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 512 for n in value):
        return "expected a list of at most 32 token counts, each between 1 and 512 ([]: the model settles it)"
    return None


def _check_model(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        return "expected a local path, a hub id, or null for the bundled model"
    return None


def _check_device(value: Any) -> str | None:
    if not isinstance(value, str) or not DEVICE_PATTERN.match(value):
        return 'expected "cpu", "cuda", "cuda:N" or "mps"'
    return None


_CHECKS = {
    "enabled": _check_bool,
    "model": _check_model,
    "device": _check_device,
    "allow_network": _check_bool,
    "trust_remote_code": _check_bool,
    "max_hole_tokens": _check_int(1, 512),
    "threshold": _check_threshold,
    "candidates": _check_int(1, 8),
    "debounce_ms": _check_int(0, 10_000),
    "lengths": _check_lengths,
    "max_steps": _check_int(1, 512),
    "action_max_tokens": _check_int(1, 512),
    "action_max_steps": _check_int(1, 512),
    "action_timeout_ms": _check_int(100, 600_000),
    "command_reply_ms": _check_int(0, 60_000),
}


def merge_settings(previous: Settings, raw: Any) -> tuple[Settings, list[str]]:
    """Apply the camelCase mapping `raw` on top of `previous`.

    Returns the new settings and one human-readable problem per rejected key.  Keys not
    present keep their previous value; unknown keys are reported, not fatal.
    """
    if raw is None:
        return previous, []
    if not isinstance(raw, dict):
        return previous, [f"diffill settings must be an object, got {type(raw).__name__}"]

    problems: list[str] = []
    changes: dict[str, Any] = {}
    known = {_camel(name): name for name in _CHECKS}
    for key, value in raw.items():
        if key == "features":
            features, feature_problems = _merge_features(previous.features, value)
            changes["features"] = features
            problems.extend(feature_problems)
            continue
        if key == "server":
            changes["server"], server_problems = _merge_server(previous.server, value)
            problems.extend(server_problems)
            continue
        name = known.get(key)
        if name is None:
            problems.append(f"diffill.{key}: unknown setting (ignored)")
            continue
        reason = _CHECKS[name](value)
        if reason is not None:
            problems.append(f"diffill.{key}: {reason}; keeping {getattr(previous, name)!r}")
            continue
        changes[name] = float(value) if name == "threshold" else tuple(value) if name == "lengths" else value
    return replace(previous, **changes), problems


def _merge_features(previous: Features, raw: Any) -> tuple[Features, list[str]]:
    if not isinstance(raw, dict):
        return previous, [f"diffill.features: expected an object of switches, got {type(raw).__name__}"]
    known = {_camel(f.name): f.name for f in fields(Features)}
    problems: list[str] = []
    changes: dict[str, bool] = {}
    for key, value in raw.items():
        name = known.get(key)
        if name is None:
            problems.append(f"diffill.features.{key}: unknown feature (ignored)")
        elif not isinstance(value, bool):
            problems.append(f"diffill.features.{key}: expected true or false; keeping {getattr(previous, name)}")
        else:
            changes[name] = value
    return replace(previous, **changes), problems


def _merge_server(previous: Server, raw: Any) -> tuple[Server, list[str]]:
    """diffill.server: {"url": "http://gpu-box:8000" or null, "token": "..." or null}.  Other keys
    under diffill.server (command, pythonPath, env) are how an editor starts this process: not ours."""
    if not isinstance(raw, dict):
        return previous, [f"diffill.server: expected an object with url and token, got {type(raw).__name__}"]
    changes: dict[str, Any] = {}
    problems: list[str] = []
    for key in ("url", "token"):
        if key not in raw:
            continue
        value = raw[key]
        if isinstance(value, str) and not value.strip():
            value = None  # an empty box in a settings UI means "not set"
        if value is not None and not isinstance(value, str):
            problems.append(f"diffill.server.{key}: expected text or null; keeping the previous value")
        elif key == "url" and value is not None and not re.match(r"^https?://", value):
            problems.append(f"diffill.server.url: expected http://HOST:PORT or https://..., got {value!r}")
        else:
            changes[key] = value.strip() if value else None
    return replace(previous, **changes), problems


def settings_section(raw: Any) -> Any:
    """The diffill part of a didChangeConfiguration payload.

    Clients send either {"diffill": {...}} (VS Code, Neovim's `settings`) or the bare
    object; both are accepted.  None means "nothing for diffill here".
    """
    if not isinstance(raw, dict):
        return raw
    if "diffill" in raw:
        return raw["diffill"]
    # A client that pushes every extension's settings at once: take the payload as ours
    # only if it names one of our keys, so other tools' settings are not "unknown keys".
    ours = {_camel(name) for name in _CHECKS} | {"features", "server"}
    return raw if ours & set(raw) else None
