"""What runs a model for the engine: base.py states the contract, the other modules fulfil it.

- bundled.py: diffill's own model (weights/), with the exact context cache;
- hf.py: a Dream or LLaDA checkpoint at run time; checkpoint.py reads one from disk or the
  hub, model_spec.py, dream.py and llada.py say how each family maps onto transformers.

`load_backend` picks one for a model name; `tiny_random` is a two-layer random model for
tests and benchmarks of the plumbing.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..model import ModelConfig, Transformer
from ..tokenizer import CodeTokenizer
from .base import Backend
from .bundled import WEIGHTS_DIR, BundledBackend


def load_backend(model: str | None = None, device: str = "cpu", trust_remote_code: bool = False,
                 allow_network: bool = False, approximate_cache: bool = False, precision: str = "auto",
                 compile: str | None = None, cache_block: int | None = None) -> Backend:
    """None: the bundled model (random weights, said so, when they are not shipped).  A
    directory of diffill's format, or a Dream/LLaDA checkpoint (local directory, or a hub
    id when allow_network).  approximate_cache: Fast-dLLM-style reuse of a full-attention
    checkpoint's context keys/values (faster, not exact).  precision: 'auto' (bf16 where the
    hardware has it, see precision.py), 'fp32' or 'bf16', for diffill's own models.  compile:
    a checkpoint's hole step under torch.compile in that mode (backends/compiled.py), off by
    default: each new shape compiles again.  cache_block: the approximate cache computed again
    every N committed slots (Fast-dLLM's per-block refresh)."""
    if (compile is not None or cache_block is not None) and (model is None or _is_bundled(Path(model).expanduser())):
        from ..request import InfillError

        raise InfillError("compile and cache_block apply to Dream/LLaDA checkpoints; diffill's own model runs "
                          "eager with an exact context cache")
    if model is None:
        if Transformer.weight_files(WEIGHTS_DIR):
            return BundledBackend.from_directory(WEIGHTS_DIR, device, name="diffill-small (bundled)",
                                                 precision=precision)
        cfg = ModelConfig.from_json(WEIGHTS_DIR / "config.json")
        tok = CodeTokenizer.load(WEIGHTS_DIR / "tokenizer.json")
        return BundledBackend.random(cfg, tok, device=device, name="diffill-small")
    path = Path(model).expanduser()
    if _is_bundled(path):
        return BundledBackend.from_directory(path, device, precision=precision)
    from .checkpoint import load_hf_backend  # transformers: imported only for real checkpoints

    return load_hf_backend(model, device=device, trust_remote_code=trust_remote_code,
                           allow_network=allow_network, approximate_cache=approximate_cache, compile=compile,
                           cache_block=cache_block)


def tiny_random(seed: int = 0) -> BundledBackend:
    """A 2-layer random model with the bundled tokenizer: exercises the plumbing in milliseconds."""
    tok = CodeTokenizer.load(WEIGHTS_DIR / "tokenizer.json")
    cfg = ModelConfig(vocab_size=tok.vocab_size, dim=32, n_layers=2, n_heads=2, ffn_hidden=64, max_seq_len=512)
    return BundledBackend.random(cfg, tok, seed=seed, name="tiny-random")


def _is_bundled(path: Path) -> bool:
    return (path / "config.json").exists() and (path / "tokenizer.json").exists() and _is_diffill_config(path)


def _is_diffill_config(path: Path) -> bool:
    data = json.loads((path / "config.json").read_text())
    return "dim" in data and "n_layers" in data and "model_type" not in data
