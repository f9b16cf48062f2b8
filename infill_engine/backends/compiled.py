"""A checkpoint's hole step (and its context pass) under torch.compile: opt-in, at fixed
shapes, eager when it fails.

On a GPU a small checkpoint's step is bound by the host, not the device: transformers'
Python and one kernel launch per op cost ~26 ms a step for the Qwen2-0.5B shape on an H200
(docs/bench/h200-2026-11-27), as much as for the 7B one, where the arithmetic takes a few.
Compiled, the step is one CUDA graph replay:

  reduce-overhead  inductor's fused kernels, replayed as CUDA graphs (the fastest step;
                   compiling takes tens of seconds per shape on a GPU)
  cudagraphs       the eager kernels captured as CUDA graphs (compiles in seconds)
  default          inductor without graphs (what reduce-overhead does on a CPU anyway)

The context cache's one pass over the whole sequence per request is compiled too (always in
cudagraphs mode, which compiles in seconds): eager, it alone would cost as much as a dozen
compiled steps.  A graph has fixed shapes, so inputs are
padded once per request: rows up to a power of two (copies of row 0, whose results are
dropped) and the sequence or the context's keys up to a multiple of KEY_BUCKET (masked out as
keys: exp() of the dtype's lowest is exactly 0).  A cached step's hole is not padded (one
graph per hole length).  Each new shape still compiles again, which is why this is off unless
asked for.  fullgraph: a graph break is a failure, reported in `error`, and the step runs eager
from then on, never half compiled.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..request import InfillError

MODES = ("reduce-overhead", "cudagraphs", "default", "max-autotune")
KEY_BUCKET = 128


def bucket_rows(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def bucket_keys(n: int) -> int:
    return -(-n // KEY_BUCKET) * KEY_BUCKET


@dataclass
class StepInputs:
    """One request's compiled-step inputs at the padded shapes."""

    ids: torch.Tensor  # [Bp, np] the step's tokens: rows[:rows] and columns [:cols] rewritten each step
    positions: torch.Tensor  # [Bp, np]
    mask: torch.Tensor  # [Bp, 1, np, K] additive: 0, or the dtype's lowest for padded keys
    kv: tuple | None  # per layer (k, v) [Bp, heads, Cp, d]: the frozen context, or None (no cache)
    rows: int  # real rows
    cols: int  # real tokens a row
    take: torch.Tensor  # [rows] their indices


def _pad_rows(t: torch.Tensor, rows: int) -> torch.Tensor:
    return torch.cat([t, t[:1].expand(rows - t.shape[0], *t.shape[1:])]) if rows > t.shape[0] else t


def context_inputs(ids: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(ids, positions, mask) of a pass over whole sequences ids [B, L], padded to [Bp, Lp]:
    the extra tokens (id 0, at positions L..Lp-1) are masked out as keys."""
    B, L = ids.shape
    Bp, Lp = bucket_rows(B), bucket_keys(L)
    ids = F.pad(_pad_rows(ids, Bp), (0, Lp - L))
    mask = torch.zeros(Bp, 1, Lp, Lp, dtype=dtype, device=ids.device)
    mask[..., L:] = torch.finfo(dtype).min
    return ids, torch.arange(Lp, device=ids.device).expand(Bp, -1).contiguous(), mask


def step_inputs(ids: torch.Tensor, positions: torch.Tensor, kv: tuple | None, dtype: torch.dtype) -> StepInputs:
    """ids [B, n] and positions [n] of the tokens a step computes; kv the context's per-layer
    keys and values [B, heads, C, d].  Without kv the step is a pass over whole sequences
    (positions 0..n-1), padded like the context pass."""
    B, n = ids.shape
    take = torch.arange(B, device=ids.device)
    if kv is None:
        return StepInputs(*context_inputs(ids, dtype), None, B, n, take)
    Bp, C = bucket_rows(B), kv[0][0].shape[2]
    Cp = bucket_keys(C)
    kv = tuple((F.pad(_pad_rows(k, Bp), (0, 0, 0, Cp - C)), F.pad(_pad_rows(v, Bp), (0, 0, 0, Cp - C)))
               for k, v in kv)
    mask = torch.zeros(Bp, 1, n, Cp + n, dtype=dtype, device=ids.device)
    mask[..., C:Cp] = torch.finfo(dtype).min  # padded context keys: exp() of it is exactly 0
    return StepInputs(_pad_rows(ids, Bp).clone(), positions.expand(Bp, -1).contiguous(), mask, kv, B, n, take)


class CompiledStep:
    """`fn` compiled with `mode` (one of MODES); calls run eager after the first failure.
    Under CUDA graphs an output lives until the next call: callers copy what they keep."""

    def __init__(self, fn, mode: str, device: torch.device):
        if mode not in MODES:
            raise InfillError(f"unknown compile mode {mode!r}; use one of {', '.join(MODES)}")
        self.fn, self.mode = fn, mode
        self.graphs = device.type == "cuda" and mode != "default"
        # Off a GPU there are no graphs to capture: the same compilers without them, rather
        # than a warning per shape that they were skipped.
        if mode == "cudagraphs":
            options = {"backend": "cudagraphs" if self.graphs else "aot_eager"}
        else:
            options = {"mode": mode if self.graphs or mode == "default" else
                       {"reduce-overhead": "default", "max-autotune": "max-autotune-no-cudagraphs"}[mode]}
        # Dynamo counts shapes per code object, for every backend of the process together, and
        # past its limit (8) runs eager without a word: allow more, and make the limit an error,
        # which the fallback below reports.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        torch._dynamo.config.fail_on_recompile_limit_hit = True
        self._compiled = torch.compile(fn, dynamic=False, fullgraph=True, **options)
        self.error: str | None = None  # why the step fell back to eager, if it did
        self.compiled_calls = 0

    def __call__(self, *args) -> torch.Tensor:
        if self._compiled is not None:
            try:
                if self.graphs:  # a new step: the previous replay's outputs may be overwritten
                    torch.compiler.cudagraph_mark_step_begin()
                out = self._compiled(*args)
                self.compiled_calls += 1
                return out
            except Exception as e:  # dynamo, inductor, a missing compiler, CUDA graph capture
                self.error = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"
                warnings.warn(f"torch.compile ({self.mode}) of {getattr(self.fn, '__name__', 'a step')} failed, "
                              f"running eager: {self.error}",
                              RuntimeWarning, stacklevel=2)
                self._compiled = None
        return self.fn(*args)
