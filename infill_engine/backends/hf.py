"""Real diffusion-LM checkpoints (Dream and LLaDA families) as diffill backends.

The published checkpoints ship remote code pinned to old transformers releases.  Their
networks are plain Qwen2 / Llama stacks run with bidirectional attention, so this
module runs them on the stock transformers classes instead: read config.json, map the
safetensors weights onto `Qwen2ForCausalLM` / `LlamaForCausalLM` (see dream.py and
llada.py), and call the model with an all-allowed 4-D attention mask.  The checkpoint's
own code runs only when the user passes trust_remote_code=True.

By default every step is a full forward over context + hole: with full attention the
context's keys and values depend on the hole, so nothing can be cached exactly.  Only
the hidden states at the hole go through the output head (150k vocabulary entries).
`approximate_cache=True` is Fast-dLLM's "DualCache" for one block: the context's keys
and values are computed once, with the hole all masks, and each step recomputes only
the hole (and, for Dream, the token before each hole run) against them.
"""

from __future__ import annotations

import inspect
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from tokenizers import Tokenizer

from ..request import InfillError
from . import dream, llada
from .model_spec import ModelSpec

# What a download fetches: configs, tokenizer files and safetensors weights.  Never
# pickled weights (.bin/.pt); Python files only for trust_remote_code.
HUB_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "vocab.json", "merges.txt"]
_HUB_ID = re.compile(r"[A-Za-z0-9_][\w.-]*(/[\w.-]+)?")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def detect_family(config: dict) -> str:
    """'dream' or 'llada' from a checkpoint's config.json; InfillError for anything else."""
    model_type = str(config.get("model_type", "")).lower()
    archs = [str(a) for a in config.get("architectures") or []]
    if "moe" in model_type or any("moe" in a.lower() for a in archs):
        raise InfillError(
            f"mixture-of-experts checkpoints (model_type {config.get('model_type')!r}) are not supported; "
            "use a dense Dream or LLaDA model"
        )
    if model_type == "dream" or any(a.startswith("Dream") for a in archs):
        return "dream"
    # Open-dCoder keeps Qwen2's own config; a mask token is what marks it as a diffusion model.
    if model_type == "qwen2" and config.get("mask_token_id") is not None:
        return "dream"
    if model_type == "llada" or any(a.startswith("LLaDA") for a in archs):
        return "llada"
    raise InfillError(
        f"unsupported checkpoint (model_type {config.get('model_type')!r}, architectures {archs}); "
        "diffill runs Dream-family (model_type 'Dream') and LLaDA-family (model_type 'llada') models"
    )


def load_checkpoint(
    path_or_id: str,
    device: str = "cpu",
    trust_remote_code: bool = False,
    allow_network: bool = False,
    dtype: torch.dtype | None = None,
    approximate_cache: bool = False,
) -> "HFBackend":
    """A Backend for a Dream or LLaDA checkpoint: a local directory, or a Hugging Face hub
    id (read from the local HF cache; downloaded only with allow_network=True).
    approximate_cache: reuse the context's keys/values across steps (faster, not exact)."""
    if approximate_cache and trust_remote_code:
        raise InfillError("approximate_cache needs diffill's own model classes; drop trust_remote_code")
    dev = _device(device)
    dtype = dtype or (torch.bfloat16 if dev.type == "cuda" else torch.float32)
    directory, name = resolve_checkpoint(path_or_id, allow_network, with_code=trust_remote_code)
    config = read_config(directory)
    family = detect_family(config)
    tokenizer = load_tokenizer(directory, family)
    if family == "dream":
        spec = dream.describe(config, tokenizer)
    else:
        spec = llada.describe(config, tokenizer, native=not trust_remote_code)
    if trust_remote_code:
        model = _load_remote_code_model(directory, dev, dtype)
    else:
        model = build_model(spec, weight_files(directory), dev, dtype)
    return HFBackend(name, model, tokenizer, spec, dev, dtype, trust_remote_code, approximate_cache)


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise InfillError(f"unknown device {name!r}; use 'cpu', 'cuda' or 'cuda:N'") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InfillError("this torch build sees no CUDA GPU; use device='cpu'")
    return device


@dataclass
class HoleState:
    positions: torch.Tensor  # [H] the hidden states that predict the hole's slots, in slot order
    active: torch.Tensor | None = None  # approximate cache: the positions recomputed every step
    context: "ContextKV | None" = None  # approximate cache: everything else's keys and values


class ContextKV:
    """Per-layer keys and values of the context, frozen at `prepare`.

    Passed to the transformers model as its cache: attention layers hand every new
    key/value to `update` and attend over what it returns.  While recording (the
    full-sequence prefill) it keeps the context positions and returns its input; later
    it puts the frozen context in front of the active tokens' fresh keys and values.
    Bidirectional attention does not care about order; RoPE is in the keys already.
    """

    def __init__(self, context_positions: torch.Tensor):
        self.context_positions = context_positions
        self.layers: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self.recording = True

    def update(self, key: torch.Tensor, value: torch.Tensor, layer_idx: int, *args, **kwargs):
        if self.recording:
            self.layers[layer_idx] = (key[:, :, self.context_positions], value[:, :, self.context_positions])
            return key, value
        k, v = self.layers[layer_idx]
        return torch.cat([k, key], dim=2), torch.cat([v, value], dim=2)

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return int(self.context_positions.numel())


class HFBackend:
    """Backend protocol over a transformers model run bidirectionally."""

    # Dream and LLaDA were trained (and instruction-tuned) with the padding after the
    # answer, never inside it; the engine uses this to keep pads at the hole's end.
    pad_trails = True

    def __init__(
        self,
        name: str,
        model: torch.nn.Module,
        tokenizer: Tokenizer,
        spec: ModelSpec,
        device: torch.device,
        dtype: torch.dtype,
        remote_code: bool = False,
        approximate_cache: bool = False,
    ):
        self.name = name
        self.model = model
        self.tokenizer = tokenizer
        self.spec = spec
        self.device = device
        self.dtype = dtype
        self.remote_code = remote_code
        self.approximate_cache = approximate_cache
        self.mask_id = spec.mask_id
        self.pad_id = spec.pad_id
        self.banned_ids = list(spec.banned_ids)
        self.max_len = spec.max_len
        self.vocab_size = int(spec.config.vocab_size)

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def prepare(self, ids: torch.Tensor, hole: torch.Tensor) -> HoleState:
        """The positions whose hidden states predict the hole's tokens (one before each
        hole slot for a shifted model; the first position predicts itself)."""
        slots = hole.nonzero().flatten().to(self.device)
        positions = (slots - 1).clamp(min=0) if self.spec.shifted else slots
        if not self.approximate_cache:
            return HoleState(positions)
        ids = ids.to(self.device)
        active = torch.unique(torch.cat([slots, positions]))  # sorted
        is_context = torch.ones(ids.shape[1], dtype=torch.bool, device=self.device)
        is_context[active] = False
        context = ContextKV(is_context.nonzero().flatten())
        with torch.inference_mode():
            self._hidden(ids, torch.arange(ids.shape[1], device=self.device)[None], context)
        context.recording = False
        return HoleState(torch.searchsorted(active, positions), active, context)

    @torch.inference_mode()
    def hole_logits(self, state: object, ids: torch.Tensor) -> torch.Tensor:
        assert isinstance(state, HoleState)
        ids = ids.to(self.device)
        if state.active is None:
            return self._logits_at(ids, state.positions)
        hidden = self._hidden(ids[:, state.active], state.active[None], state.context)
        return self._head(hidden[:, state.positions])

    @torch.inference_mode()
    def sequence_logits(self, ids: torch.Tensor) -> torch.Tensor:
        """Logits predicting every position of ids [B, L] -> [B, L, V] (shift applied)."""
        positions = torch.arange(ids.shape[1], device=self.device)
        if self.spec.shifted:
            positions = (positions - 1).clamp(min=0)
        return self._logits_at(ids.to(self.device), positions)

    def _logits_at(self, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        if self.remote_code:
            out = self.model(input_ids=ids)
            return self._finish((out.logits if hasattr(out, "logits") else out[0])[:, positions])
        hidden = self._hidden(ids, torch.arange(ids.shape[1], device=self.device)[None])
        return self._head(hidden[:, positions])

    def _hidden(self, ids: torch.Tensor, positions: torch.Tensor, context: ContextKV | None = None) -> torch.Tensor:
        """Final hidden states [B, n, D] of tokens ids [B, n] at sequence positions [1, n],
        attending to each other and to the frozen context, if any."""
        batch, n = ids.shape
        keys = n + (context.get_seq_length() if context is not None and not context.recording else 0)
        # An explicit additive mask of zeros: every position attends to every other.
        # transformers passes a 4-D mask through untouched and then never applies its
        # own causal mask (config.is_causal=False alone does not reach SDPA here).
        allow_all = torch.zeros(batch, 1, n, keys, dtype=self.dtype, device=self.device)
        cache = {self._cache_kwarg: context} if context is not None else {}
        out = self.model.model(
            input_ids=ids, attention_mask=allow_all, position_ids=positions.expand(batch, -1),
            use_cache=context is not None, **cache,
        )  # fmt: skip
        return out.last_hidden_state

    @property
    def _cache_kwarg(self) -> str:
        # transformers 5 renamed past_key_values to cache.
        params = inspect.signature(self.model.model.forward).parameters
        return "cache" if "cache" in params else "past_key_values"

    def _head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._finish(self.model.lm_head(hidden))

    def _finish(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()[..., : self.vocab_size]
        if self.spec.logit_scale != 1.0:
            logits = logits * self.spec.logit_scale
        return self._fold_ends_into_pad(logits)

    def _fold_ends_into_pad(self, logits: torch.Tensor) -> torch.Tensor:
        """An end-of-text token inside a hole means "nothing more here", which is what the
        pad means to the engine: move its probability onto the pad so auto-length
        infilling sees one "empty slot" choice."""
        ends = [e for e in self.spec.end_ids if e < logits.shape[-1]]
        if self.pad_id is None or not ends:
            return logits
        both = logits[..., [self.pad_id, *ends]]
        logits[..., self.pad_id] = torch.logsumexp(both, dim=-1)
        logits[..., ends] = float("-inf")
        return logits


# ---------------------------------------------------------------------------- files


def resolve_checkpoint(path_or_id: str, allow_network: bool, with_code: bool = False) -> tuple[Path, str]:
    """(directory holding config.json, display name) for a local path or a hub id.
    with_code: also fetch the checkpoint's Python files (for trust_remote_code)."""
    path = Path(path_or_id).expanduser()
    if path.is_dir():
        path = path.resolve()
        return path, path.name
    if path.exists():
        raise InfillError(f"{path_or_id} is a file; pass the checkpoint directory (the one holding config.json)")
    if path_or_id.startswith((".", "/", "~")) or not _HUB_ID.fullmatch(path_or_id):
        raise InfillError(f"no checkpoint directory {path_or_id}")

    try:
        from huggingface_hub import snapshot_download
    except ImportError as e:  # pragma: no cover - transformers depends on huggingface_hub
        raise InfillError(f"{path_or_id} is not a local directory, and huggingface_hub is not installed") from e
    name = path_or_id.split("/")[-1]
    patterns = HUB_PATTERNS + (["*.py"] if with_code else [])
    try:  # the local HF cache needs no network
        return Path(snapshot_download(path_or_id, allow_patterns=patterns, local_files_only=True)), name
    except Exception:
        pass
    if not allow_network:
        raise InfillError(
            f"{path_or_id} is not a local directory and is not in the Hugging Face cache. Pass the path of a "
            "downloaded checkpoint, or enable network access (allow_network=True, --allow-network) to fetch "
            "its config, tokenizer and safetensors weights."
        )
    try:
        return Path(snapshot_download(path_or_id, allow_patterns=patterns)), name
    except Exception as e:
        raise InfillError(f"could not download {path_or_id}: {e}") from e


def read_config(directory: Path) -> dict:
    path = directory / "config.json"
    if not path.is_file():
        raise InfillError(f"{directory} has no config.json; is it a Hugging Face checkpoint directory?")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InfillError(f"{path} is not valid JSON: {e}") from e
    if not isinstance(config, dict):
        raise InfillError(f"{path} must hold a JSON object")
    return config


def weight_files(directory: Path) -> list[Path]:
    """The safetensors shards of a checkpoint, in index order."""
    index = directory / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        files = [directory / f for f in dict.fromkeys(weight_map.values())]
        absent = [f.name for f in files if not f.is_file()]
        if absent:
            raise InfillError(f"{directory} is missing weight shards listed in its index: {', '.join(absent[:3])}")
        if files:
            return files
    single = directory / "model.safetensors"
    if single.is_file():
        return [single]
    files = sorted(directory.glob("*.safetensors"))
    if files:
        return files
    if any(f.suffix in _PICKLE_SUFFIXES for f in directory.iterdir()):
        raise InfillError(
            f"{directory} has only PyTorch pickle weights (.bin). diffill loads safetensors only, because "
            "unpickling can run arbitrary code. Use a safetensors copy of the checkpoint or convert it with "
            "a tool you trust."
        )
    raise InfillError(f"{directory} has no weights (*.safetensors)")


def load_tokenizer(directory: Path, family: str) -> Tokenizer:
    if (directory / "tokenizer.json").is_file():
        tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))
    elif family == "dream" and (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
        # Dream ships Qwen2's vocab.json + merges.txt with a remote-code tokenizer class
        # that only renames Qwen2's; the stock Qwen2 tokenizer reads the same files and
        # the added tokens from tokenizer_config.json.
        from transformers import Qwen2Tokenizer

        tokenizer = Qwen2Tokenizer.from_pretrained(str(directory)).backend_tokenizer
    else:
        raise InfillError(f"{directory} has no tokenizer.json")
    # Text that happens to contain "<|mask|>" or "<|endoftext|>" is code to complete,
    # not a control token: encode special tokens' spelling as ordinary text.
    tokenizer.encode_special_tokens = True
    return tokenizer


def build_model(spec: ModelSpec, files: list[Path], device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Instantiate spec.model_class without allocating, then adopt the checkpoint tensors."""
    with torch.device("meta"):
        model = spec.model_class(spec.config)
    state: dict[str, torch.Tensor] = {}
    for file in files:
        with safe_open(str(file), framework="pt", device="cpu") as f:
            for key in f.keys():
                target = spec.rename(key)
                if target is not None:
                    tensor = f.get_tensor(key)
                    state[target] = tensor.to(device=device, dtype=dtype if tensor.is_floating_point() else None)
    if spec.tied:
        if "model.embed_tokens.weight" in state:
            state.setdefault("lm_head.weight", state["model.embed_tokens.weight"])
    expected = set(model.state_dict())
    missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:4])}{' ...' if len(unexpected) > 4 else ''}")
        raise InfillError(f"checkpoint weights do not fit a {spec.family} model: {'; '.join(parts)}")
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as e:  # shape mismatches: config.json and weights disagree
        raise InfillError(f"checkpoint weights do not match its config.json: {str(e)[:500]}") from e
    if spec.tied:
        model.lm_head.weight = model.model.embed_tokens.weight
    # RoPE's inverse frequencies are a non-persistent buffer, so they are still on the
    # meta device; compute them for real (in float32, as transformers does).
    rotary = model.model.rotary_emb
    model.model.rotary_emb = type(rotary)(config=model.config).to(device)
    leftovers = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if leftovers:
        raise InfillError(f"internal error: {spec.family} model tensors left uninitialised: {leftovers[:4]}")
    # Flash-attention kernels read causality from the module, not from the mask.
    for module in model.modules():
        if hasattr(module, "is_causal"):
            module.is_causal = False
    return model.eval()


def _load_remote_code_model(directory: Path, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """The checkpoint's own modeling code: only on the user's explicit trust_remote_code."""
    from transformers import AutoModel

    try:
        model = AutoModel.from_pretrained(str(directory), trust_remote_code=True, dtype=dtype, use_safetensors=True)
    except Exception as e:
        raise InfillError(f"the checkpoint's remote code failed to load: {e}") from e
    return model.to(device).eval()
