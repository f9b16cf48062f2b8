"""Dream family (Dream-v0, Dream-Coder, DiffuCoder, DreamOn, Open-dCoder) on stock Qwen2.

Their config.json says model_type "Dream" and points at remote code, but the weights
are Qwen2's under Qwen2's own names, so `Qwen2ForCausalLM` runs them unchanged; the
loader gives it a full (non-causal) attention mask.  Two things differ from Qwen2 as
a language model: attention is bidirectional, and logits are *shifted* — the token at
position i is predicted from the hidden state at i - 1, as in the autoregressive model
Dream was initialised from.
"""

from __future__ import annotations

from dataclasses import replace

from tokenizers import Tokenizer
from transformers import Qwen2Config, Qwen2ForCausalLM

from ..request import InfillError
from .model_spec import ModelSpec, first_eos_id, special_ids, token_id

# Dream's README documents a 2048-token training context; the config inherits
# Qwen2.5's 131072 positions, which the diffusion model never saw.
TRAINED_CONTEXT = 2048

MASK, PAD, EXPAND, DELETE = "<|mask|>", "<|dlm_pad|>", "<|expand|>", "<|delete|>"
END_OF_TEXT = ("<|endoftext|>", "<|im_end|>")

_ARCH_KEYS = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "vocab_size", "max_position_embeddings", "rms_norm_eps", "rope_theta", "hidden_act", "head_dim",
)  # fmt: skip


def describe(config: dict, tokenizer: Tokenizer) -> ModelSpec:
    missing = [k for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size") if k not in config]
    if missing:
        raise InfillError(f"Dream config.json lacks {', '.join(missing)}; is this a complete checkpoint?")
    kwargs = {k: config[k] for k in _ARCH_KEYS if config.get(k) is not None}
    if isinstance(config.get("rope_scaling"), dict):
        kwargs["rope_scaling"] = config["rope_scaling"]
    tied = bool(config.get("tie_word_embeddings", False))
    qwen = Qwen2Config(
        **kwargs,
        tie_word_embeddings=tied,
        use_sliding_window=False,  # diffusion attends over everything; no sliding layers
        attention_dropout=0.0,
        attn_implementation="sdpa",
    )

    # Slots a hole does not need: Dream fills them with its pad (<|endoftext|> on the
    # released models, <|dlm_pad|> where a tokenizer has one).  DreamOn's <|expand|> and
    # <|delete|> grow and shrink the hole; they are banned like any control token, and the
    # engine lifts the ban when it lets the hole change length (auto length).
    ids = special_ids(
        config, tokenizer, int(config["vocab_size"]), mask_token=MASK,
        pad_choices=(token_id(tokenizer, PAD), config.get("pad_token_id"), first_eos_id(config)),
        end_tokens=END_OF_TEXT, never_tokens=(EXPAND, DELETE),
    )  # fmt: skip
    ids = replace(ids, expand_id=token_id(tokenizer, EXPAND), delete_id=token_id(tokenizer, DELETE))

    return ModelSpec(
        family="dream",
        model_class=Qwen2ForCausalLM,
        config=qwen,
        rename=_rename,
        tied=tied,
        shifted=True,
        ids=ids,
        max_len=min(int(config.get("max_position_embeddings", TRAINED_CONTEXT)), TRAINED_CONTEXT),
    )


def _rename(name: str) -> str | None:
    # Some exports save RoPE's inverse frequencies; they are recomputed from the config.
    if name.endswith("rotary_emb.inv_freq"):
        return None
    return name
