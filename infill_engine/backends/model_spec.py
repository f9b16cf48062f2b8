"""What the checkpoint loader needs to know to run one Dream or LLaDA checkpoint.

Each family module (`dream.py`, `llada.py`) reads a checkpoint's config.json and
tokenizer and answers with one `ModelSpec`: which stock transformers class runs the
weights, how the checkpoint's weight names map onto it, and which token ids mean
"mask", "nothing here" and "never put this in code".
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from tokenizers import Tokenizer
from transformers import PretrainedConfig, PreTrainedModel

from ..request import InfillError


@dataclass(frozen=True)
class SpecialIds:
    mask_id: int
    pad_id: int | None  # what the model writes into slots a hole does not need
    end_ids: list[int]  # "text ends here" tokens that mean the same as pad_id (pad_id itself excluded)
    banned_ids: list[int]  # never committed into a hole
    # DreamOn's length edits: a slot predicted as expand becomes two masks, one predicted
    # as delete is removed.  None: the checkpoint has no such token (fixed canvas).
    expand_id: int | None = None
    delete_id: int | None = None
    # Tokens the checkpoint was trained to see before the prefix and after the suffix
    # (DreamOn: bos, eos); the engine keeps them when it cuts the context to the window.
    frame: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())


@dataclass
class ModelSpec:
    family: str  # "dream" | "llada"
    model_class: type[PreTrainedModel]  # a *ForCausalLM class: `.model` gives hidden states, `.lm_head` logits
    config: PretrainedConfig
    rename: Callable[[str], str | None]  # checkpoint weight name -> model weight name (None: not a weight we use)
    tied: bool  # the output head reuses the input embedding matrix
    shifted: bool  # token i is predicted from the hidden state at i - 1 (Dream)
    ids: SpecialIds  # mask, pad, end and banned token ids
    max_len: int = 2048
    logit_scale: float = 1.0


def special_token_ids(tokenizer: Tokenizer) -> set[int]:
    """Ids of the tokenizer's added tokens marked special (<|im_start|>, <|mask|>, ...)."""
    return {i for i, tok in tokenizer.get_added_tokens_decoder().items() if tok.special}


def unused_ids(tokenizer: Tokenizer, model_vocab: int) -> list[int]:
    """Embedding rows past the tokenizer's last id: padding for matmul speed, never real text."""
    last = max(tokenizer.get_vocab(with_added_tokens=True).values())
    return list(range(last + 1, model_vocab))


def banned_ids(tokenizer: Tokenizer, vocab: int, pad_id: int | None, *never: int | None) -> list[int]:
    """Ids a hole may never commit: special and unused tokens plus `never`, except the pad.

    The pad stays allowed because it is how a hole says "no more text here"."""
    banned = special_token_ids(tokenizer) | {i for i in never if i is not None}
    banned.discard(pad_id)  # type: ignore[arg-type]
    return sorted(i for i in banned if i < vocab) + unused_ids(tokenizer, vocab)


def token_id(tokenizer: Tokenizer, *names: str) -> int | None:
    for name in names:
        tid = tokenizer.token_to_id(name)
        if tid is not None:
            return tid
    return None


def config_ids(value: object) -> list[int]:
    """config.json writes eos_token_id as an int or a list."""
    if value is None:
        return []
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]  # type: ignore[union-attr]


def special_ids(config: dict, tokenizer: Tokenizer, vocab: int, *, mask_token: str, pad_choices: tuple[int | None, ...],
                end_tokens: tuple[str, ...], never_tokens: tuple[str, ...] = (),
                default_mask_id: int | None = None) -> SpecialIds:
    """The mask, pad, end and banned ids of a checkpoint, found the same way for every family.

    mask: config.json's mask_token_id, else the tokenizer's `mask_token`, else `default_mask_id`.
    pad: the first of `pad_choices` that is not None (each family knows where its pad lives).
    ends: config.json's eos ids and the tokenizer's `end_tokens`, less the pad: an end token
    inside a hole means "nothing more here", which is what the pad means to the engine.
    banned: special and unused tokens, the ends, the mask and `never_tokens`; never the pad."""
    mask_id = config.get("mask_token_id")
    if mask_id is None:
        mask_id = token_id(tokenizer, mask_token)
    if mask_id is None:
        mask_id = default_mask_id
    if mask_id is None:
        raise InfillError(
            f"cannot find the mask token: config.json has no mask_token_id and the tokenizer no {mask_token}"
        )
    pad_id = next((i for i in pad_choices if i is not None), None)
    ends = set(config_ids(config.get("eos_token_id")))
    ends |= {t for t in (token_id(tokenizer, name) for name in end_tokens) if t is not None}
    ends.discard(pad_id)  # type: ignore[arg-type]
    never = [token_id(tokenizer, name) for name in never_tokens]
    banned = banned_ids(tokenizer, vocab, pad_id, *ends, int(mask_id), *never)
    return SpecialIds(int(mask_id), None if pad_id is None else int(pad_id), sorted(ends), banned)


def first_eos_id(config: dict) -> int | None:
    return next(iter(config_ids(config.get("eos_token_id"))), None)

