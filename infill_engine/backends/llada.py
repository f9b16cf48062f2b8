"""LLaDA family (LLaDA-8B-Base/Instruct, LLaDA-1.5) on stock Llama.

LLaDA's code is OLMo's with a Llama-style block ("block_type": "llama"): RMSNorm, RoPE
(rotate-half layout), separate q/k/v projections, SwiGLU with `ff_proj` as the gate.
That is exactly `LlamaForCausalLM` under other weight names, so the loader renames
the weights and runs Llama with a full (non-causal) attention mask.  No logit shift:
position i's logits predict the token at i.  (Checkpoints with q/k/v biases only map
onto Qwen2, which is Llama plus those biases.)  LLaDA-MoE is a different network.
"""

from __future__ import annotations

import math
import re

from tokenizers import Tokenizer
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from ..request import InfillError
from .model_spec import ModelSpec, first_eos_id, special_ids, token_id

MASK, EOS, EOT, BOS = "<|mdm_mask|>", "<|endoftext|>", "<|eot_id|>", "<|startoftext|>"
DEFAULT_MASK_ID = 126336  # LLaDA's modeling code hard-codes it where config.json omits it

_TOP = {
    "model.transformer.wte.weight": "model.embed_tokens.weight",
    "model.transformer.ln_f.weight": "model.norm.weight",
    "model.transformer.ff_out.weight": "lm_head.weight",
}
_BLOCK = {
    "q_proj": "self_attn.q_proj",
    "k_proj": "self_attn.k_proj",
    "v_proj": "self_attn.v_proj",
    "attn_out": "self_attn.o_proj",
    "ff_proj": "mlp.gate_proj",  # LLaDALlamaBlock: act(ff_proj(x)) * up_proj(x)
    "up_proj": "mlp.up_proj",
    "ff_out": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ff_norm": "post_attention_layernorm",
}
_BLOCK_NAME = re.compile(r"model\.transformer\.blocks\.(\d+)\.(\w+)\.(weight|bias)")


def _unsupported(config: dict) -> list[str]:
    """Options of LLaDA's (OLMo's) config that a Llama block cannot express."""
    wrong = {
        "block_type": ("llama",),
        "layer_norm_type": ("rms",),
        "activation_type": ("silu",),
        "rope": (True,),
        "alibi": (False,),
        "attention_layer_norm": (False,),
        "include_bias": (False,),
        "bias_for_layer_norm": (False, None),
        "input_emb_norm": (False,),
        "yarn": (False,),
        "block_group_size": (1,),
    }
    return [f"{key}={config[key]!r}" for key, ok in wrong.items() if key in config and config[key] not in ok]


def describe(config: dict, tokenizer: Tokenizer, native: bool = True) -> ModelSpec:
    """native=False: the checkpoint's own code will run it, so options a Llama block
    cannot express are no obstacle."""
    missing = [k for k in ("d_model", "n_heads", "n_layers") if k not in config]
    if missing:
        raise InfillError(f"LLaDA config.json lacks {', '.join(missing)}; is this a complete checkpoint?")
    bad = _unsupported(config) if native else []
    if bad:
        raise InfillError(
            f"this LLaDA variant is not supported without its remote code ({', '.join(bad)}); "
            "pass trust_remote_code=True to run the checkpoint's own code"
        )

    d_model, n_heads = int(config["d_model"]), int(config["n_heads"])
    n_kv = config.get("n_kv_heads") or (1 if config.get("multi_query_attention") else n_heads)
    vocab = int(config.get("embedding_size") or config["vocab_size"])
    tied = bool(config.get("weight_tying", False))
    max_seq = int(config.get("max_sequence_length", 4096))
    arch = dict(
        vocab_size=vocab,
        hidden_size=d_model,
        intermediate_size=int(config.get("mlp_hidden_size") or config.get("mlp_ratio", 4) * d_model),
        num_hidden_layers=int(config["n_layers"]),
        num_attention_heads=n_heads,
        num_key_value_heads=int(n_kv),
        max_position_embeddings=max_seq,
        rms_norm_eps=float(config.get("rms_norm_eps", 1e-5)),
        rope_theta=float(config.get("rope_theta", 10000.0)),
        hidden_act="silu",
        tie_word_embeddings=tied,
        attention_dropout=0.0,
        attn_implementation="sdpa",
    )
    if config.get("include_qkv_bias"):
        model_class, hf_config = Qwen2ForCausalLM, Qwen2Config(**arch, use_sliding_window=False)
    else:
        model_class, hf_config = LlamaForCausalLM, LlamaConfig(**arch, attention_bias=False, mlp_bias=False)

    # LLaDA fills the slots an answer does not need with EOS (<|endoftext|>); the
    # Instruct models close a turn with <|eot_id|> first.  Both mean "nothing here".
    ids = special_ids(
        config, tokenizer, vocab, mask_token=MASK, default_mask_id=DEFAULT_MASK_ID,
        pad_choices=(config.get("pad_token_id"), first_eos_id(config), token_id(tokenizer, EOS)),
        end_tokens=(EOS, EOT), never_tokens=(BOS,),
    )  # fmt: skip

    return ModelSpec(
        family="llada",
        model_class=model_class,
        config=hf_config,
        rename=_rename,
        tied=tied,
        shifted=False,
        ids=ids,
        max_len=min(max_seq, 4096),
        logit_scale=1.0 / math.sqrt(d_model) if config.get("scale_logits") else 1.0,
    )


def _rename(name: str) -> str | None:
    if name in _TOP:
        return _TOP[name]
    m = _BLOCK_NAME.fullmatch(name)
    if m and m.group(2) in _BLOCK:
        return f"model.layers.{m.group(1)}.{_BLOCK[m.group(2)]}.{m.group(3)}"
    return name  # unknown: the loader reports it as a weight the model does not have
