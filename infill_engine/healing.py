"""Token healing: a hole that starts where the text before it stops mid-token.

A model sees text as tokens, and a cursor rarely sits where the tokenizer would cut: after
`return ` the prefix ends in a lone space token (the model writes ` x`, so the line gets two
spaces), after `getLogger(__n` in the `n` of `name`.  The model never saw holes start there in
training, and fills them badly (held-out lines cut at a random character: `diffill eval --data
midline`, MODEL_CARD.md).

The remedy (as in autoregressive token healing): take the prefix's last token back into the
hole and let the hole's first slot hold only tokens that begin with that token's text.  The
model then writes the whole token (`name`, ` x`), and the engine drops the part already typed
from every candidate.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable, Sequence


def heal_text(prefix: str, prefix_ids: Sequence[int], decode: Callable[[list[int]], str],
              banned: Sequence[int]) -> str:
    """The text of the prefix's last token when the hole should take it back, else "".

    Only mid-line: at a line start (the prefix ends with a newline, or with indentation only)
    holes start at a token boundary, as in training.  A last token that does not decode to the
    prefix's own ending (part of a multi-byte character), whose text alone differs from its text
    after another token (a sentencepiece-style decoder drops a leading space at the start), or
    that is a control token stays."""
    if not prefix_ids or prefix_ids[-1] in banned:
        return ""
    line = prefix[prefix.rfind("\n") + 1:]
    if not line.strip():
        return ""
    text = decode([prefix_ids[-1]])
    if not text or "\n" in text or not prefix.endswith(text):
        return ""
    alone_is_exact = len(prefix_ids) < 2 or decode(list(prefix_ids[-2:])) == decode([prefix_ids[-2]]) + text
    return text if alone_is_exact else ""


class TokenTexts:
    """Each token id's own text, decoded once per backend (8k ids for the bundled model, 150k for
    a Qwen-vocabulary checkpoint: about a second, the first time a hole heals)."""

    def __init__(self, decode: Callable[[list[int]], str], vocab_size: int):
        self._decode, self._size = decode, vocab_size
        self._texts: list[str] | None = None
        self.starting_with = lru_cache(maxsize=256)(self._starting_with)

    def _starting_with(self, text: str) -> tuple[int, ...]:
        """The ids whose text begins with `text` (the ones a healed hole's first slot may hold)."""
        if self._texts is None:
            self._texts = [self._decode([i]) for i in range(self._size)]
        return tuple(i for i, t in enumerate(self._texts) if t.startswith(text))
