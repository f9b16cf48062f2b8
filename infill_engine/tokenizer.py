"""Byte-level BPE tokenizer for source code (HF `tokenizers`).

Byte-level so that any text round-trips exactly: indentation, tabs, CRLF, unicode.
Special tokens sit at fixed ids 0..2 so a model config never has to look them up.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

PAD, MASK, DOC = "<pad>", "<mask>", "<doc>"
SPECIAL_TOKENS = [PAD, MASK, DOC]  # pad fills unneeded hole slots; doc separates packed files


class CodeTokenizer:
    def __init__(self, tokenizer: Tokenizer):
        self.tok = tokenizer
        # "<mask>" typed in a file is text, never the mask token.
        self.tok.encode_special_tokens = True
        self.pad_id = tokenizer.token_to_id(PAD)
        self.mask_id = tokenizer.token_to_id(MASK)
        self.doc_id = tokenizer.token_to_id(DOC)
        if None in (self.pad_id, self.mask_id, self.doc_id):
            raise ValueError(f"tokenizer lacks the special tokens {SPECIAL_TOKENS}")

    @property
    def vocab_size(self) -> int:
        return self.tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tok.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids: Iterable[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=True)

    def save(self, path: str | Path) -> None:
        self.tok.save(str(path))

    @classmethod
    def load(cls, path: str | Path) -> "CodeTokenizer":
        return cls(Tokenizer.from_file(str(path)))

    @classmethod
    def train(cls, texts: Iterator[str], vocab_size: int = 8192) -> "CodeTokenizer":
        tok = Tokenizer(models.BPE())
        # The GPT-2 split keeps runs of spaces together, so indentation becomes a few tokens.
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)
