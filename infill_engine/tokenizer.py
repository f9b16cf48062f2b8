"""Byte-level BPE tokenizer for source code (HF `tokenizers`).

Byte-level so that any text round-trips exactly: indentation, tabs, CRLF, unicode.
Special tokens sit at fixed ids 0..2 so a model config never has to look them up.

Every pre-token ends at a newline at the latest (`line_pre_tokenizer`), so no token crosses a
line end.  That makes tokenization *line-local*: the tokens of `prefix + middle + suffix` are
the tokens of the three pieces encoded apart whenever the cuts fall at line starts.  Training
can then cut line-aligned holes straight out of a pre-tokenized stream and see exactly the
token sequences the engine builds at inference, where the pieces are encoded apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Iterator

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

PAD, MASK, DOC = "<pad>", "<mask>", "<doc>"
SPECIAL_TOKENS = [PAD, MASK, DOC]
NEWLINE = "\u010a"  # "\n" as the byte-level alphabet writes it  # pad fills unneeded hole slots; doc separates packed files


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

    @property
    def is_line_local(self) -> bool:
        """True when no token can cross a line end (tokenizers made by `train` since v2)."""
        pre = self.tok.pre_tokenizer
        if pre is None:
            return False
        pieces = [text for text, _ in pre.pre_tokenize_str("x\n\n    y  \n z")]
        return all(p.count(NEWLINE) <= 1 and (NEWLINE not in p or p.endswith(NEWLINE)) for p in pieces)

    @classmethod
    def train(cls, texts: Iterator[str], vocab_size: int = 8192) -> "CodeTokenizer":
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = line_pre_tokenizer()
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=SPECIAL_TOKENS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)


def line_pre_tokenizer() -> pre_tokenizers.PreTokenizer:
    """Cut after every newline first, then the GPT-2 byte-level split inside each line (it keeps
    runs of spaces together, so indentation becomes a few tokens)."""
    return pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex("\n"), behavior="merged_with_previous"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
