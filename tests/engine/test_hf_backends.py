"""Dream- and LLaDA-family checkpoints on stock transformers classes.

Each test writes a tiny random checkpoint to disk in the released layout (config.json
with model_type / architectures / auto_map, safetensors under the real weight names, a
real BPE tokenizer holding the special tokens) and loads it with the production
loader.  Logits are checked against an independent forward pass written here in plain
torch (float64): RMSNorm, rotate-half RoPE, grouped-query attention with *no* mask,
SwiGLU.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from infill_engine.backends.checkpoint import detect_family, load_hf_backend
from infill_engine.engine import Engine
from infill_engine.request import InfillError, InfillRequest, SamplerSettings

CORPUS = [
    "def add(a, b):\n    return a + b\n",
    "for i in range(10):\n\tprint(i, end='')\r\n",
    "class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n",
    "names = {'café': [1, 2, 3], 'über': None}  # ünïcode\n",
    "if x is not None and len(items) > 0:\n    result.append(x)\n",
]
DREAM_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|mask|>"]
LLADA_SPECIALS = ["<|startoftext|>", "<|endoftext|>", "<|eot_id|>", "<|mdm_mask|>"]
DREAM_AUTO_MAP = {"AutoConfig": "configuration_dream.DreamConfig", "AutoModel": "modeling_dream.DreamModel"}
LLADA_AUTO_MAP = {
    "AutoConfig": "configuration_llada.LLaDAConfig",
    "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM",
    "AutoModel": "modeling_llada.LLaDAModelLM",
}
HIDDEN, HEADS, KV_HEADS, INTER, LAYERS = 32, 4, 2, 48, 2
# Logits here reach |12|; float32 rounding against the float64 reference stays near 1e-5
# of that.  Real mistakes (causal mask, missing shift, swapped gate/up) are off by > 0.01.
ATOL = 1e-4


# ------------------------------------------------------------------ checkpoint writers


def train_tokenizer(specials: list[str]) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(CORPUS * 10, trainer=trainer)
    tok.add_special_tokens(specials)  # ids right after the BPE vocabulary, as in the real files
    return tok


def model_vocab(tok: Tokenizer) -> int:
    # Real checkpoints round the embedding matrix up (Dream 152064 rows for 151667 tokens).
    return (tok.get_vocab_size() + 15) // 16 * 16


def random_weights(vocab: int, kv_heads: int, qkv_bias: bool, seed: int) -> dict:
    """Weights under neutral names; each family writer renames them to its own layout."""
    g = torch.Generator().manual_seed(seed)
    head_dim = HIDDEN // HEADS

    def rnd(*shape: int, std: float) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * std

    w: dict = {
        "embed": rnd(vocab, HIDDEN, std=1.0),
        "norm": 1 + rnd(HIDDEN, std=0.1),
        "head": rnd(vocab, HIDDEN, std=0.5),
        "layers": [],
    }
    for _ in range(LAYERS):
        layer = {
            "attn_norm": 1 + rnd(HIDDEN, std=0.1),
            "q": rnd(HEADS * head_dim, HIDDEN, std=0.4),
            "k": rnd(kv_heads * head_dim, HIDDEN, std=0.4),
            "v": rnd(kv_heads * head_dim, HIDDEN, std=0.3),
            "o": rnd(HIDDEN, HEADS * head_dim, std=0.3),
            "ffn_norm": 1 + rnd(HIDDEN, std=0.1),
            "gate": rnd(INTER, HIDDEN, std=0.3),
            "up": rnd(INTER, HIDDEN, std=0.3),
            "down": rnd(HIDDEN, INTER, std=0.3),
        }
        if qkv_bias:
            layer |= {"bq": rnd(HEADS * head_dim, std=0.2), "bk": rnd(kv_heads * head_dim, std=0.2)}
            layer |= {"bv": rnd(kv_heads * head_dim, std=0.2)}
        w["layers"].append(layer)
    return w


def write_dream(
    directory: Path,
    *,
    tokenizer_files: str = "vocab+merges",
    tied: bool = False,
    expand: bool = False,
    delete: bool = False,
    bos: bool = False,
    shards: int = 2,
    seed: int = 0,
    adjust=None,
) -> dict:
    """A Dream-family checkpoint: Qwen2 weight names, model_type "Dream", remote-code auto_map.
    expand / delete: DreamOn's <|expand|> / <|delete|> tokens; bos: Dream's <|beginoftext|>,
    named as the tokenizer's bos_token; adjust(weights, tokenizer)
    may set weights before they are written."""
    directory.mkdir(parents=True, exist_ok=True)
    specials = DREAM_SPECIALS + (["<|beginoftext|>"] if bos else []) + (["<|expand|>"] if expand else [])
    specials += ["<|delete|>"] if delete else []
    tok = train_tokenizer(specials)
    vocab = model_vocab(tok)
    w = random_weights(vocab, KV_HEADS, qkv_bias=True, seed=seed)
    if adjust is not None:
        adjust(w, tok)
    if tied:
        w["head"] = w["embed"]
    tensors = {"model.embed_tokens.weight": w["embed"], "model.norm.weight": w["norm"]}
    if not tied:
        tensors["lm_head.weight"] = w["head"]
    for i, lw in enumerate(w["layers"]):
        p = f"model.layers.{i}."
        tensors |= {
            p + "input_layernorm.weight": lw["attn_norm"],
            p + "self_attn.q_proj.weight": lw["q"],
            p + "self_attn.q_proj.bias": lw["bq"],
            p + "self_attn.k_proj.weight": lw["k"],
            p + "self_attn.k_proj.bias": lw["bk"],
            p + "self_attn.v_proj.weight": lw["v"],
            p + "self_attn.v_proj.bias": lw["bv"],
            p + "self_attn.o_proj.weight": lw["o"],
            p + "post_attention_layernorm.weight": lw["ffn_norm"],
            p + "mlp.gate_proj.weight": lw["gate"],
            p + "mlp.up_proj.weight": lw["up"],
            p + "mlp.down_proj.weight": lw["down"],
        }
    _save_shards(directory, tensors, shards)

    ids = {t: tok.token_to_id(t) for t in specials}
    config = {
        "architectures": ["DreamModel"],
        "auto_map": DREAM_AUTO_MAP,
        "model_type": "Dream",
        "attention_dropout": 0.0,
        "bos_token_id": ids["<|endoftext|>"],
        "eos_token_id": ids["<|endoftext|>"],
        "pad_token_id": ids["<|endoftext|>"],
        "mask_token_id": ids["<|mask|>"],
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "intermediate_size": INTER,
        "num_attention_heads": HEADS,
        "num_key_value_heads": KV_HEADS,
        "num_hidden_layers": LAYERS,
        "max_position_embeddings": 131072,
        "max_window_layers": LAYERS,
        "rms_norm_eps": 1e-6,
        "rope_scaling": None,
        "rope_theta": 1000000.0,
        "sliding_window": None,
        "use_sliding_window": False,
        "tie_word_embeddings": tied,
        "torch_dtype": "bfloat16",
        "transformers_version": "4.46.2",
        "use_cache": True,
        "vocab_size": vocab,
    }
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    if tokenizer_files == "tokenizer.json":
        tok.save(str(directory / "tokenizer.json"))
    else:  # Dream's own layout: Qwen2 vocab/merges plus a remote-code tokenizer class
        tok.model.save(str(directory))
        added = {
            str(i): {"content": t, "special": True, "lstrip": False, "rstrip": False, "normalized": False}
            for t, i in ids.items()
        }
        tokenizer_config = {
            "added_tokens_decoder": added,
            "auto_map": {"AutoTokenizer": ["tokenization_dream.DreamTokenizer", None]},
            "tokenizer_class": "DreamTokenizer",
            "bos_token": "<|beginoftext|>" if bos else None,
            "eos_token": "<|endoftext|>",
            "pad_token": "<|endoftext|>",
            "mask_token": "<|mask|>",
        }
        (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    return {"weights": w, "ids": ids, "vocab": vocab, "kv_heads": KV_HEADS, "theta": 1000000.0, "eps": 1e-6}


def write_llada(directory: Path, *, kv_heads: int = HEADS, tied: bool = False, seed: int = 1, **overrides) -> dict:
    """A LLaDA-family checkpoint: OLMo-style names under model.transformer, model_type "llada"."""
    directory.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(LLADA_SPECIALS)
    vocab = model_vocab(tok)
    w = random_weights(vocab, kv_heads, qkv_bias=False, seed=seed)
    if tied:
        w["head"] = w["embed"]
    tensors = {"model.transformer.wte.weight": w["embed"], "model.transformer.ln_f.weight": w["norm"]}
    if not tied:
        tensors["model.transformer.ff_out.weight"] = w["head"]
    for i, lw in enumerate(w["layers"]):
        p = f"model.transformer.blocks.{i}."
        tensors |= {
            p + "attn_norm.weight": lw["attn_norm"],
            p + "q_proj.weight": lw["q"],
            p + "k_proj.weight": lw["k"],
            p + "v_proj.weight": lw["v"],
            p + "attn_out.weight": lw["o"],
            p + "ff_norm.weight": lw["ffn_norm"],
            p + "ff_proj.weight": lw["gate"],  # LLaDA's gate: act(ff_proj(x)) * up_proj(x)
            p + "up_proj.weight": lw["up"],
            p + "ff_out.weight": lw["down"],
        }
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    tok.save(str(directory / "tokenizer.json"))

    ids = {t: tok.token_to_id(t) for t in LLADA_SPECIALS}
    config = {
        "activation_type": "silu",
        "alibi": False,
        "alibi_bias_max": 8.0,
        "architectures": ["LLaDAModelLM"],
        "attention_dropout": 0.0,
        "attention_layer_norm": False,
        "attention_layer_norm_with_affine": True,
        "auto_map": LLADA_AUTO_MAP,
        "bias_for_layer_norm": False,
        "block_group_size": 1,
        "block_type": "llama",
        "d_model": HIDDEN,
        "embedding_dropout": 0.0,
        "embedding_size": vocab,
        "eos_token_id": ids["<|endoftext|>"],
        "flash_attention": False,
        "include_bias": False,
        "include_qkv_bias": False,
        "init_device": "meta",
        "init_fn": "mitchell",
        "input_emb_norm": False,
        "layer_norm_type": "rms",
        "layer_norm_with_affine": True,
        "mask_token_id": ids["<|mdm_mask|>"],
        "max_sequence_length": 4096,
        "mlp_hidden_size": INTER,
        "mlp_ratio": 4,
        "model_type": "llada",
        "multi_query_attention": None,
        "n_heads": HEADS,
        "n_kv_heads": kv_heads,
        "n_layers": LAYERS,
        "pad_token_id": ids["<|endoftext|>"],
        "precision": "amp_bf16",
        "residual_dropout": 0.0,
        "rms_norm_eps": 1e-05,
        "rope": True,
        "rope_full_precision": True,
        "rope_theta": 500000.0,
        "scale_logits": False,
        "transformers_version": "4.46.3",
        "use_cache": False,
        "vocab_size": vocab,
        "weight_tying": tied,
    } | overrides
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    return {"weights": w, "ids": ids, "vocab": vocab, "kv_heads": kv_heads, "theta": 500000.0, "eps": 1e-5}


def _save_shards(directory: Path, tensors: dict, shards: int) -> None:
    names = list(tensors)
    weight_map = {}
    for s in range(shards):
        part = names[s::shards]
        file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
        save_file({n: tensors[n].contiguous() for n in part}, str(directory / file), metadata={"format": "pt"})
        weight_map |= {n: file for n in part}
    index = {"metadata": {"total_size": sum(t.numel() * 4 for t in tensors.values())}, "weight_map": weight_map}
    (directory / "model.safetensors.index.json").write_text(json.dumps(index, indent=2))


# ------------------------------------------------------------------ reference forward


def reference_logits(ck: dict, ids: torch.Tensor, record: list | None = None, frozen: tuple | None = None) -> torch.Tensor:
    """Unshifted logits [L, V] for one sequence: a plain bidirectional pre-norm transformer.

    record: receives each layer's (keys, values).  frozen = (positions [L] bool, recorded
    keys/values): those positions' keys and values are taken from the recording instead
    (what a context cache built before the hole changed gives)."""
    w, eps, theta, kv_heads = ck["weights"], ck["eps"], ck["theta"], ck["kv_heads"]
    d = lambda t: t.double()  # noqa: E731
    head_dim = HIDDEN // HEADS
    length = ids.shape[0]

    def rms(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * d(weight)

    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.arange(length, dtype=torch.float64)[:, None] * inv_freq[None, :]
    cos, sin = angles.cos().repeat(1, 2), angles.sin().repeat(1, 2)

    def rope(x: torch.Tensor) -> torch.Tensor:  # x [heads, L, head_dim]; rotate the two halves
        half = head_dim // 2
        rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
        return x * cos + rotated * sin

    x = d(w["embed"])[ids]
    for index, lw in enumerate(w["layers"]):
        h = rms(x, lw["attn_norm"])
        q = h @ d(lw["q"]).T + (d(lw["bq"]) if "bq" in lw else 0)
        k = h @ d(lw["k"]).T + (d(lw["bk"]) if "bk" in lw else 0)
        v = h @ d(lw["v"]).T + (d(lw["bv"]) if "bv" in lw else 0)
        q = rope(q.view(length, HEADS, head_dim).transpose(0, 1))
        k = rope(k.view(length, kv_heads, head_dim).transpose(0, 1))
        v = v.view(length, kv_heads, head_dim).transpose(0, 1)
        if record is not None:
            record.append((k, v))
        if frozen is not None:
            where, (old_k, old_v) = frozen[0], frozen[1][index]
            k, v = torch.where(where[:, None], old_k, k), torch.where(where[:, None], old_v, v)
        group = HEADS // kv_heads  # query head j reads key/value head j // group
        k, v = k.repeat_interleave(group, dim=0), v.repeat_interleave(group, dim=0)
        attn = torch.softmax(q @ k.transpose(1, 2) / head_dim**0.5, dim=-1)  # no mask: every pair attends
        x = x + (attn @ v).transpose(0, 1).reshape(length, HIDDEN) @ d(lw["o"]).T
        h = rms(x, lw["ffn_norm"])
        x = x + (F.silu(h @ d(lw["gate"]).T) * (h @ d(lw["up"]).T)) @ d(lw["down"]).T
    return rms(x, w["norm"]) @ d(w["head"]).T


def shifted(logits: torch.Tensor) -> torch.Tensor:
    return torch.cat([logits[:1], logits[:-1]], dim=0)


def folded(logits: torch.Tensor, pad: int, ends: list[int]) -> torch.Tensor:
    """End-of-text tokens mean "nothing here" like the pad: their probability moves onto it."""
    out = logits.clone()
    out[:, pad] = torch.logsumexp(logits[:, [pad, *ends]], dim=-1)
    out[:, ends] = float("-inf")
    return out


def dream_expected(ck: dict, ids: torch.Tensor, **frozen) -> torch.Tensor:
    ref = shifted(reference_logits(ck, ids, **frozen))
    return folded(ref, ck["ids"]["<|endoftext|>"], [ck["ids"]["<|im_end|>"]])


def llada_expected(ck: dict, ids: torch.Tensor, **frozen) -> torch.Tensor:
    ref = reference_logits(ck, ids, **frozen)
    return folded(ref, ck["ids"]["<|endoftext|>"], [ck["ids"]["<|eot_id|>"]])


def sample_ids(backend) -> torch.Tensor:
    ids = backend.encode("def add(a, b):\n    return a + b\n")
    return torch.tensor(ids[:20])


def check_hole(backend, ck: dict, ids: torch.Tensor, expected_full, atol: float = ATOL) -> None:
    """hole_logits on a batch of two sequences with a masked middle (the second with one
    context token changed) equals the reference at the hole, row by row."""
    hole = torch.zeros(len(ids), dtype=torch.bool)
    hole[5:11] = True
    masked = ids.clone()
    masked[hole] = backend.mask_id
    other = masked.clone()
    other[-1] = (other[-1] + 1) % 250
    batch = torch.stack([masked, other])
    state = backend.prepare(batch, hole)
    got = backend.hole_logits(state, batch)
    assert got.shape == (2, 6, ck["vocab"]) and got.dtype == torch.float32
    for row in range(2):
        torch.testing.assert_close(got[row].double(), expected_full(batch[row])[hole], atol=atol, rtol=1e-5)


# ------------------------------------------------------------------------------ tests


def test_detect_family_reads_real_config_keys():
    assert detect_family({"model_type": "Dream", "architectures": ["DreamModel"]}) == "dream"
    assert detect_family({"model_type": "llada", "architectures": ["LLaDAModelLM"]}) == "llada"
    with pytest.raises(InfillError, match="mixture-of-experts"):
        detect_family({"model_type": "llada_moe", "architectures": ["LLaDAMoEModelLM"]})
    # Open-dCoder: Qwen2's own config plus a mask token.
    assert detect_family({"model_type": "qwen2", "mask_token_id": 151666}) == "dream"
    with pytest.raises(InfillError, match="Dream-family"):  # an autoregressive Qwen2
        detect_family({"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"]})


def test_dream_checkpoint_matches_reference_with_shifted_logits(tmp_path):
    ck = write_dream(tmp_path / "Dream-Coder-v0-7B")
    backend = load_hf_backend(str(tmp_path / "Dream-Coder-v0-7B"))
    assert backend.name == "Dream-Coder-v0-7B"
    assert backend.model.dtype == torch.float32  # cpu default
    assert type(backend.model).__name__ == "Qwen2ForCausalLM"

    ids = sample_ids(backend)
    got = backend.sequence_logits(ids[None])[0].double()
    # Token i is predicted from hidden state i-1; position 0 keeps its own.
    torch.testing.assert_close(got, dream_expected(ck, ids), atol=ATOL, rtol=1e-5)
    unshifted = reference_logits(ck, ids)
    assert (got[5, :256] - unshifted[5, :256]).abs().max() > 1e-2, "position 5 must read hidden state 4"
    check_hole(backend, ck, ids, lambda m: dream_expected(ck, m))


@pytest.mark.parametrize("tied", [False, True])
def test_llada_checkpoint_matches_reference_without_shift(tmp_path, tied):
    ck = write_llada(tmp_path / "LLaDA-8B-Base", kv_heads=2, tied=tied)
    backend = load_hf_backend(str(tmp_path / "LLaDA-8B-Base"))
    assert type(backend.model).__name__ == "LlamaForCausalLM"
    eos, eot = ck["ids"]["<|endoftext|>"], ck["ids"]["<|eot_id|>"]
    assert backend.pad_id == eos and backend.mask_id == ck["ids"]["<|mdm_mask|>"]

    ids = sample_ids(backend)
    got = backend.sequence_logits(ids[None])[0].double()
    # No shift; EoT means "nothing here" like EOS, so its probability is folded into the pad.
    torch.testing.assert_close(got, llada_expected(ck, ids), atol=ATOL, rtol=1e-5)
    assert torch.isinf(got[:, eot]).all()
    check_hole(backend, ck, ids, lambda m: llada_expected(ck, m))


@pytest.mark.parametrize("family", ["dream", "llada"])
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_attention_is_bidirectional(tmp_path, family, attention):
    ck = write_dream(tmp_path / "m") if family == "dream" else write_llada(tmp_path / "m")
    backend = load_hf_backend(str(tmp_path / "m"))
    # eager attention applies only the mask it is given (it has no is_causal switch),
    # so this checks that the all-allowed mask alone makes the model bidirectional.
    backend.model.set_attn_implementation(attention)
    expected = dream_expected if family == "dream" else llada_expected
    ids = sample_ids(backend)
    got = backend.sequence_logits(ids[None])[0].double()
    torch.testing.assert_close(got, expected(ck, ids), atol=ATOL, rtol=1e-5)
    changed = ids.clone()
    changed[-1] = (ids[-1] + 7) % 250
    before = backend.sequence_logits(ids[None])[0, :, :256]  # ordinary tokens (folded ones are -inf)
    after = backend.sequence_logits(changed[None])[0, :, :256]
    # A causal model would leave every earlier position untouched.
    for pos in (1, 2, len(ids) // 2):
        assert (before[pos] - after[pos]).abs().max() > 1e-3, f"position {pos} ignores a later token"


def test_dream_tokenizer_and_special_ids(tmp_path):
    """Dream's own layout (vocab.json + merges.txt + DreamTokenizer config), DreamOn's <|expand|>."""
    ck = write_dream(tmp_path / "DreamOn-v0-7B", expand=True)
    backend = load_hf_backend(str(tmp_path / "DreamOn-v0-7B"))
    ids = ck["ids"]
    assert backend.mask_id == ids["<|mask|>"]
    assert backend.pad_id == ids["<|endoftext|>"]
    banned = set(backend.banned_ids)
    assert {ids["<|mask|>"], ids["<|expand|>"], ids["<|im_start|>"], ids["<|im_end|>"]} <= banned
    assert backend.pad_id not in banned
    assert set(range(ids["<|expand|>"] + 1, ck["vocab"])) <= banned  # padding rows of the embedding
    assert not banned & set(range(256))  # ordinary text stays allowed
    assert backend.max_len == 2048  # config says 131072; Dream was trained on 2048

    text = "def f(x):\n\treturn {'café': x}\r\n    # <|mask|> is text here\n"
    encoded = backend.encode(text)
    assert backend.decode(encoded) == text
    assert ids["<|mask|>"] not in encoded and ids["<|endoftext|>"] not in encoded
    assert backend.decode([*backend.encode("a = 1"), backend.pad_id]) == "a = 1"


def test_tied_embeddings_and_tokenizer_json(tmp_path):
    """Open-dCoder-style: small Qwen2.5 with tie_word_embeddings and no lm_head tensor."""
    ck = write_dream(tmp_path / "Open-dCoder-0.5B", tokenizer_files="tokenizer.json", tied=True, shards=1)
    backend = load_hf_backend(str(tmp_path / "Open-dCoder-0.5B"))
    assert backend.model.lm_head.weight.data_ptr() == backend.model.model.embed_tokens.weight.data_ptr()
    ids = sample_ids(backend)
    got = backend.sequence_logits(ids[None])[0].double()
    torch.testing.assert_close(got, dream_expected(ck, ids), atol=ATOL, rtol=1e-5)


def test_bfloat16_weights(tmp_path):
    """What a GPU gets by default: bf16 weights and activations, RoPE tables kept in float32."""
    ck = write_llada(tmp_path / "m")
    backend = load_hf_backend(str(tmp_path / "m"), dtype=torch.bfloat16)
    assert backend.model.model.embed_tokens.weight.dtype == torch.bfloat16
    assert backend.model.model.rotary_emb.inv_freq.dtype == torch.float32
    ids = sample_ids(backend)
    got = backend.sequence_logits(ids[None])[0].double()
    expected = llada_expected(ck, ids)
    finite = torch.isfinite(expected)
    error = (got[finite] - expected[finite]).abs()
    # bf16 keeps ~3 significant digits: errors of a few tenths on logits up to 12, where a
    # causal mask or a missing shift would be off by whole units.
    assert error.mean() < 0.1 and error.max() < 1.0, (error.mean(), error.max())
    assert (got.argmax(-1) == expected.argmax(-1)).float().mean() > 0.8


def test_pickle_only_checkpoint_is_refused(tmp_path):
    write_dream(tmp_path / "m", shards=1)
    for f in (tmp_path / "m").glob("*.safetensors"):
        f.unlink()
    (tmp_path / "m" / "model.safetensors.index.json").unlink()
    (tmp_path / "m" / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(InfillError, match="safetensors only"):
        load_hf_backend(str(tmp_path / "m"))


def test_hub_ids_paths_and_devices_fail_clearly(tmp_path):
    with pytest.raises(InfillError, match="allow_network"):
        load_hf_backend("diffill-tests/no-such-model-7B")
    with pytest.raises(InfillError, match="no checkpoint directory"):
        load_hf_backend(str(tmp_path / "missing"))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(InfillError, match="checkpoint directory"):
        load_hf_backend(str(tmp_path / "config.json"))
    with pytest.raises(InfillError, match="unknown device"):
        load_hf_backend(str(tmp_path), device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(InfillError, match="no CUDA"):
            load_hf_backend(str(tmp_path), device="cuda")


def test_weights_that_do_not_fit_are_reported(tmp_path):
    ck_dir = tmp_path / "m"
    write_llada(ck_dir)
    config = json.loads((ck_dir / "config.json").read_text())
    (ck_dir / "config.json").write_text(json.dumps(config | {"n_layers": 3}))
    with pytest.raises(InfillError, match="missing model.layers.2"):
        load_hf_backend(str(ck_dir))
    (ck_dir / "config.json").write_text(json.dumps(config | {"mlp_hidden_size": INTER * 2}))
    with pytest.raises(InfillError, match="do not match its config.json"):
        load_hf_backend(str(ck_dir))
    (ck_dir / "config.json").write_text(json.dumps(config | {"block_type": "sequential"}))
    with pytest.raises(InfillError, match="trust_remote_code"):
        load_hf_backend(str(ck_dir))


@pytest.mark.parametrize("family", ["dream", "llada"])
def test_approximate_cache_freezes_the_context(tmp_path, family):
    """Fast-dLLM-style: context keys/values computed once with the hole all masks."""
    ck = write_dream(tmp_path / "m") if family == "dream" else write_llada(tmp_path / "m")
    expected = dream_expected if family == "dream" else llada_expected
    exact = load_hf_backend(str(tmp_path / "m"))
    approx = load_hf_backend(str(tmp_path / "m"), approximate_cache=True)
    ids = sample_ids(exact)
    hole = torch.zeros(len(ids), dtype=torch.bool)
    hole[5:11] = True
    masked = ids.clone()
    masked[hole] = exact.mask_id
    state = approx.prepare(masked[None], hole)

    # First step: the cache was built from this very sequence, so nothing is approximate.
    first = approx.hole_logits(state, masked[None])[0]
    torch.testing.assert_close(first, exact.hole_logits(exact.prepare(masked[None], hole), masked[None])[0])

    # Later steps: committed slots change the hole, the context's keys/values stay as they were.
    filled = masked.clone()
    filled[5:8] = ids[5:8]
    recorded: list = []
    reference_logits(ck, masked, record=recorded)
    recomputed = hole.clone()
    if family == "dream":  # the token before the hole predicts the hole's first slot
        recomputed[4] = True
    want = expected(ck, filled, frozen=(~recomputed, recorded))[hole]
    got = approx.hole_logits(state, filled[None])[0]
    torch.testing.assert_close(got.double(), want, atol=ATOL, rtol=1e-5)
    exact_now = exact.hole_logits(exact.prepare(filled[None], hole), filled[None])[0]
    assert (got - exact_now)[:, :256].abs().max() > 1e-3, "a stale context must show"


@pytest.mark.parametrize("family", ["dream", "llada"])
def test_refresh_recomputes_the_frozen_context_from_the_committed_tokens(tmp_path, family):
    """Fast-dLLM's per-block refresh: the rows asked for get the context keys/values of their
    sequence as it is now (the reference's, slot for slot), the others keep theirs."""
    ck = write_dream(tmp_path / "m") if family == "dream" else write_llada(tmp_path / "m")
    approx = load_hf_backend(str(tmp_path / "m"), approximate_cache=True, cache_block=2)
    ids = sample_ids(approx)
    hole = torch.zeros(len(ids), dtype=torch.bool)
    hole[5:11] = True
    masked = ids.clone()
    masked[hole] = approx.mask_id
    batch = masked.repeat(3, 1)
    state = approx.prepare(batch, hole)
    before = [tuple(t.clone() for t in state.context.layers[i]) for i in range(len(state.context.layers))]
    batch[:, 5:8] = ids[5:8]  # a block committed in every row; only rows 0 and 2 are refreshed
    rows = torch.tensor([0, 2])
    step = approx.refresh(approx.select_rows(state, rows), batch, rows, logits=True)
    # the pass's hole logits are the next step's (the keys in another order: up to rounding)
    torch.testing.assert_close(step, approx.hole_logits(approx.select_rows(state, rows), batch[rows]))
    context = ~hole
    if family == "dream":  # the token before the hole is recomputed every step, never cached
        context[4] = False
    recorded: list = []
    reference_logits(ck, batch[0], record=recorded)
    for i, (k, v) in state.context.layers.items():
        assert torch.equal(k[1], before[i][0][1]) and torch.equal(v[1], before[i][1][1])
        for row in (0, 2):
            if i > 0:  # layer 0's keys are the tokens' own; deeper ones attend to the hole
                assert (k[row] - before[i][0][row]).abs().max() > 1e-3, "the keys must change"
            torch.testing.assert_close(k[row].double(), recorded[i][0][:, context], atol=ATOL, rtol=1e-5)
            torch.testing.assert_close(v[row].double(), recorded[i][1][:, context], atol=ATOL, rtol=1e-5)


def denoised(engine: Engine, req: InfillRequest) -> torch.Tensor:
    """The loop's slots at the end, every row (token ids, not text: nothing merged)."""
    layout, lengths, _ = engine.plan(req)
    with torch.no_grad():
        return engine._denoise(layout, req, lengths).x


@pytest.mark.parametrize("family", ["dream", "llada"])
def test_refreshing_every_token_is_the_exact_loop(tmp_path, family):
    """cache_block=1 at one token a step: each step's context is that of the sequence as it
    is, so the cached loop commits the exact loop's tokens, token for token: one row, and an
    auto length's rows that finish at different steps (the refresh then computes some rows)."""
    directory = tmp_path / "m"
    (write_dream if family == "dream" else write_llada)(directory)
    exact = Engine.load(str(directory))
    refreshed = Engine(load_hf_backend(str(directory), approximate_cache=True, cache_block=1))
    frozen = Engine(load_hf_backend(str(directory), approximate_cache=True))
    greedy = SamplerSettings(strategy="confidence")
    prefix, suffix = "def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n"
    for req in (InfillRequest(prefix, suffix, length=6, sampler=greedy),
                InfillRequest(prefix, suffix, max_length=6, lengths=(2, 4, 6), sampler=greedy)):
        assert torch.equal(denoised(refreshed, req), denoised(exact, req))
        want, got = exact.infill(req), refreshed.infill(req)
        for a, b in zip(want.candidates, got.candidates):
            assert a.text == b.text and a.token_confidences == pytest.approx(b.token_confidences, abs=1e-4)
    stale = frozen.infill(req).candidates[0].token_confidences
    assert stale != pytest.approx(want.candidates[0].token_confidences, abs=1e-4), "without refresh it is approximate"


def test_refresh_costs_one_full_forward_a_block(tmp_path):
    """Full forwards = blocks (the first is `prepare`'s), hole forwards = steps less the
    refreshes: a refresh's pass over the whole sequence computes its step's hole logits too.
    The llada preset refreshes as it enters each block; cache_block=N after N committed tokens."""
    directory = tmp_path / "LLaDA-8B-Instruct"
    write_llada(directory)
    prefix, suffix = "def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n"
    for cache_block, settings, schedule in [
        (None, SamplerSettings(strategy="llada", block_length=4), "hhhhFhhh"),  # 1 a step, 2 blocks
        (3, SamplerSettings(strategy="fixed", tokens_per_step=2), "hhFh"),  # refresh once 4 >= 3 are in
        (None, SamplerSettings(strategy="fixed", tokens_per_step=2), "hhhh"),  # no blocks: frozen
    ]:
        engine = Engine(load_hf_backend(str(directory), approximate_cache=True, cache_block=cache_block))
        widths: list[int] = []
        # every forward embeds its tokens first
        engine.backend.model.model.embed_tokens.register_forward_pre_hook(
            lambda module, args: widths.append(args[0].shape[1]))
        result = engine.infill(InfillRequest(prefix, suffix, length=8, sampler=settings))
        full = len(engine.backend.encode(prefix) + engine.backend.encode(suffix)) + 8
        assert set(widths) == {full, 8}  # whole sequences, and the hole alone (LLaDA: no shift)
        assert "".join("F" if w == full else "h" for w in widths) == "F" + schedule
        assert result.forwards == len(schedule)  # a step each, whichever pass computed it


def reference_infill(backend, logits_of, prefix: list[int], suffix: list[int], n: int) -> list[int]:
    """The engine's greedy one-token-per-step loop ("confidence") on the reference forward;
    logits_of(sequence) gives the expected backend logits of a whole sequence."""
    x = [backend.mask_id] * n
    banned = [*backend.banned_ids, backend.pad_id]  # fixed length: no padding
    for _ in range(n):
        logp = logits_of(torch.tensor(prefix + x + suffix))[len(prefix) : len(prefix) + n].log_softmax(-1)
        logp[:, banned] = float("-inf")
        prob, token = logp.max(-1)
        best = max((i for i in range(n) if x[i] == backend.mask_id), key=lambda i: prob[i])
        x[best] = int(token[best])
    return x


@pytest.mark.parametrize("family", ["dream", "llada"])
def test_engine_infills_through_a_checkpoint(tmp_path, family):
    directory = tmp_path / ("Dream-v0-Base-7B" if family == "dream" else "LLaDA-8B-Instruct")
    ck = write_dream(directory) if family == "dream" else write_llada(directory)
    engine = Engine.load(str(directory))
    backend = engine.backend
    assert engine.name == directory.name and not engine.is_random

    prefix, suffix = "def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n"
    greedy = SamplerSettings(strategy="confidence", temperature=0.0)
    result = engine.infill(InfillRequest(prefix, suffix, length=5, sampler=greedy))
    assert result.forwards == 5 and result.hole_tokens == 5
    expected = dream_expected if family == "dream" else llada_expected
    before, after = backend.encode(prefix), backend.encode(suffix)
    want = reference_infill(backend, lambda seq: expected(ck, seq), before, after, 5)
    assert result.text == backend.decode(want)

    # heal=False: the slots as asked (a prefix ending `return ` would take its space back)
    auto = engine.infill(InfillRequest(prefix, suffix, max_length=8, sampler=SamplerSettings(), heal=False))
    assert auto.hole_tokens == 8 and 1 <= auto.forwards <= 8
    assert len(auto.candidates[0].token_confidences) <= 8  # pad slots dropped, not decoded
    # Auto length by search works on checkpoints too (their eos/pad trails the text): one
    # candidate per length that fits, with exactly that many tokens.
    searched = engine.infill(InfillRequest(prefix, suffix, max_length=8, lengths=(2, 5, 9), sampler=greedy,
                                           heal=False))
    assert sorted(len(c.token_confidences) for c in searched.candidates) == [2, 5]

    # The same infill with the approximate context cache follows the frozen-context reference.
    cached = Engine(load_hf_backend(str(directory), approximate_cache=True))
    result = cached.infill(InfillRequest(prefix, suffix, length=5, sampler=greedy))
    recorded: list = []
    reference_logits(ck, torch.tensor(before + [backend.mask_id] * 5 + after), record=recorded)
    recomputed = torch.zeros(len(before) + 5 + len(after), dtype=torch.bool)
    recomputed[len(before) - (family == "dream") : len(before) + 5] = True
    frozen = (~recomputed, recorded)
    want = reference_infill(backend, lambda seq: expected(ck, seq, frozen=frozen), before, after, 5)
    assert result.text == backend.decode(want)


REMOTE_CONFIG = '''
from transformers import Qwen2Config


class DreamConfig(Qwen2Config):
    model_type = "Dream"
'''
REMOTE_MODEL = '''
from pathlib import Path

import torch
from transformers import Qwen2ForCausalLM

from .configuration_dream import DreamConfig

Path({marker!r}).write_text("the checkpoint's code ran")


class DreamModel(Qwen2ForCausalLM):
    """Stands in for Dream's published code: unshifted logits, full attention."""

    config_class = DreamConfig

    def forward(self, input_ids=None, **kwargs):
        b, n = input_ids.shape
        allow_all = torch.zeros(b, 1, n, n, dtype=self.dtype, device=input_ids.device)
        return super().forward(input_ids=input_ids, attention_mask=allow_all)
'''


def test_checkpoint_code_runs_only_with_trust_remote_code(tmp_path, monkeypatch):
    import sys

    import transformers.dynamic_module_utils as dynamic_modules

    directory = tmp_path / "Dream-v0-Instruct-7B"
    ck = write_dream(directory)
    marker = tmp_path / "remote-code-ran"
    (directory / "configuration_dream.py").write_text(REMOTE_CONFIG)
    (directory / "modeling_dream.py").write_text(REMOTE_MODEL.format(marker=str(marker)))
    (directory / "tokenization_dream.py").write_text(f"open({str(marker)!r}, 'w').write('tokenizer code ran')\n")
    # transformers copies remote code into a modules cache; keep it out of the user's home.
    monkeypatch.setattr(dynamic_modules, "HF_MODULES_CACHE", str(tmp_path / "modules"))
    monkeypatch.setattr(sys, "path", list(sys.path))

    native = load_hf_backend(str(directory))
    assert not marker.exists(), "the checkpoint's Python files must not run without the flag"
    assert type(native.model).__name__ == "Qwen2ForCausalLM"

    remote = load_hf_backend(str(directory), trust_remote_code=True)
    assert marker.exists() and type(remote.model).__name__ == "DreamModel"
    ids = sample_ids(remote)
    got = remote.sequence_logits(ids[None])[0].double()
    torch.testing.assert_close(got, dream_expected(ck, ids), atol=ATOL, rtol=1e-5)
