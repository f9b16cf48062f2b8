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
from .model_spec import ModelSpec, SpecialIds, first_eos_id, special_ids, token_id

# Dream's README documents a 2048-token training context; the config inherits
# Qwen2.5's 131072 positions, which the diffusion model never saw.
TRAINED_CONTEXT = 2048

MASK, PAD, EXPAND, DELETE = "<|mask|>", "<|dlm_pad|>", "<|expand|>", "<|delete|>"
BOS = "<|beginoftext|>"  # Dream's tokenizer's bos_token
END_OF_TEXT = ("<|endoftext|>", "<|im_end|>")

_ARCH_KEYS = (
    "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
    "vocab_size", "max_position_embeddings", "rms_norm_eps", "rope_theta", "hidden_act", "head_dim",
)  # fmt: skip


def describe(config: dict, tokenizer: Tokenizer, tokenizer_config: dict | None = None) -> ModelSpec:
    """tokenizer_config: the checkpoint's tokenizer_config.json (its bos and eos tokens)."""
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
    expand = token_id(tokenizer, EXPAND)
    if expand is not None:
        ids = dreamon_ids(ids, config, tokenizer, tokenizer_config or {}, expand)

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


def dreamon_ids(ids: SpecialIds, config: dict, tokenizer: Tokenizer, tokenizer_config: dict, expand: int) -> SpecialIds:
    """DreamOn's edits and input layout, as its own infilling code does them: the input is
    bos + prefix + masks + suffix + eos (the tokenizer's bos and eos), and a slot committed
    as eos is deleted (<|delete|> where a tokenizer has one).  The delete token is then no
    "end of text" to fold into the pad: it has to stay a choice of its own.

    DreamOn's README builds the prompt as `[tokenizer.bos_token_id] + encode(prefix) + masks +
    encode(suffix) + [tokenizer.eos_token_id]`; transformers takes those two from
    tokenizer_config.json's bos_token and eos_token, which is why they are read from there first
    (config.json's ids are only a fallback for a checkpoint without that file)."""
    bos = _first(_named_id(tokenizer, tokenizer_config.get("bos_token")), token_id(tokenizer, BOS),
                 config.get("bos_token_id"))
    eos = _first(_named_id(tokenizer, tokenizer_config.get("eos_token")), first_eos_id(config))
    delete = _first(token_id(tokenizer, DELETE), eos)
    frame = (() if bos is None else (int(bos),), () if eos is None else (int(eos),))
    return replace(ids, expand_id=expand, delete_id=delete, frame=frame,
                   end_ids=[e for e in ids.end_ids if e != delete])


def _first(*ids: int | None) -> int | None:
    return next((i for i in ids if i is not None), None)


def _named_id(tokenizer: Tokenizer, token: object) -> int | None:
    """The id of a tokenizer_config.json token entry: a string or {"content": ...}."""
    if isinstance(token, dict):
        token = token.get("content")
    return token_id(tokenizer, token) if isinstance(token, str) else None


def _rename(name: str) -> str | None:
    # Some exports save RoPE's inverse frequencies; they are recomputed from the config.
    if name.endswith("rotary_emb.inv_freq"):
        return None
    return name
