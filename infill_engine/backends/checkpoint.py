"""Reading a Dream or LLaDA checkpoint: find it, read its config, tokenizer and weights, build the model.

The published checkpoints ship remote code pinned to old transformers releases.  Their
networks are plain Qwen2 / Llama stacks, so this module builds them on the stock
transformers classes instead: read config.json, tell the family (dream.py, llada.py say
how each maps onto `Qwen2ForCausalLM` / `LlamaForCausalLM`), and adopt the safetensors
weights.  The checkpoint's own code runs only when the user passes trust_remote_code=True.
`load_hf_backend` puts it together as an `HFBackend` (hf.py).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from safetensors import safe_open
from tokenizers import Tokenizer

from ..request import InfillError
from . import dream, llada
from .hf import HFBackend
from .model_spec import ModelSpec

# What a download fetches: configs, tokenizer files and safetensors weights.  Never
# pickled weights (.bin/.pt); Python files only for trust_remote_code.
HUB_PATTERNS = ["*.json", "*.safetensors", "tokenizer*", "vocab.json", "merges.txt"]
_HUB_ID = re.compile(r"[A-Za-z0-9_][\w.-]*(/[\w.-]+)?")
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")


def load_hf_backend(
    path_or_id: str,
    device: str = "cpu",
    trust_remote_code: bool = False,
    allow_network: bool = False,
    dtype: torch.dtype | None = None,
    approximate_cache: bool = False,
    compile: str | None = None,
    cache_block: int | None = None,
) -> HFBackend:
    """A Backend for a Dream or LLaDA checkpoint: a local directory, or a Hugging Face hub
    id (read from the local HF cache; downloaded only with allow_network=True).
    approximate_cache: reuse the context's keys/values across steps (faster, not exact).
    compile: a torch.compile mode for the hole step (compiled.py; None: eager).
    cache_block: compute the cached context again every N committed slots (hf.py)."""
    if approximate_cache and trust_remote_code:
        raise InfillError("approximate_cache needs diffill's own model classes; drop trust_remote_code")
    dev = _device(device)
    dtype = dtype or (torch.bfloat16 if dev.type == "cuda" else torch.float32)
    directory, name = resolve_checkpoint(path_or_id, allow_network, with_code=trust_remote_code)
    config = read_config(directory)
    family = detect_family(config)
    tokenizer = load_tokenizer(directory, family)
    if family == "dream":
        spec = dream.describe(config, tokenizer, read_tokenizer_config(directory))
    else:
        spec = llada.describe(config, tokenizer, native=not trust_remote_code)
    if trust_remote_code:
        model = _load_remote_code_model(directory, dev, dtype)
    else:
        model = build_model(spec, weight_files(directory), dev, dtype)
    backend = HFBackend(name, model, tokenizer, spec, dev, dtype, trust_remote_code, approximate_cache, compile,
                        cache_block)
    backend.generation_defaults = read_generation_defaults(directory)
    return backend


# generation_config.json keys a preset takes as its defaults.  Not `steps`: upstream ties it
# to max_new_tokens (Dream's 512), which says nothing about a hole of a few tokens; and not
# temperature, which stays the request's (greedy unless asked).
PRESET_KEYS = ("eps", "alg", "alg_temp", "top_p", "top_k", "block_length", "remasking", "cfg_scale")


def read_generation_defaults(directory: Path) -> dict:
    """The sampler preset defaults in a checkpoint's generation_config.json ({} without one)."""
    path = directory / "generation_config.json"
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise InfillError(f"{path} is not valid JSON: {e}") from e
    return {k: config[k] for k in PRESET_KEYS if isinstance(config, dict) and config.get(k) is not None}


def _device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError as e:
        raise InfillError(f"unknown device {name!r}; use 'cpu', 'cuda' or 'cuda:N'") from e
    if device.type == "cuda" and not torch.cuda.is_available():
        raise InfillError("this torch build sees no CUDA GPU; use device='cpu'")
    return device


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


def read_tokenizer_config(directory: Path) -> dict:
    """tokenizer_config.json ({} without a readable one): where a checkpoint names its bos and eos."""
    path = directory / "tokenizer_config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return config if isinstance(config, dict) else {}


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
