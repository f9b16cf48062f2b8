"""Training examples for the masked-diffusion infilling objective.

Each example is one sequence of `seq_len` tokens: prefix + hole slots + suffix, where the
hole holds the middle's tokens followed by <pad> slots (the length scheme: at inference the
model is given more slots than it needs and fills the rest with <pad>, which is dropped).
Prefix, middle and suffix are tokenized *separately*, exactly as the engine does at
inference, so the model never relies on a BPE merge across the hole's edges.

Holes are the product's real holes: whole lines (as in HumanEval-Infilling: indentation
through the newline), syntax nodes found with tree-sitter (statements, blocks, expressions,
argument lists, bodies) and "rest of the line" from a cursor; plus plain whole-sequence
masked diffusion, which teaches the language itself.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache

import torch

from ..tokenizer import CodeTokenizer

MAX_HOLE = 128

# Node types worth masking as a whole (tree-sitter-python names).
SPAN_NODE_TYPES = {
    "expression_statement", "return_statement", "if_statement", "for_statement", "while_statement",
    "assignment", "augmented_assignment", "call", "argument_list", "block", "parameters",
    "comparison_operator", "boolean_operator", "binary_operator", "list_comprehension", "subscript",
    "list", "dictionary", "tuple", "lambda", "conditional_expression", "raise_statement",
    "with_statement", "try_statement", "function_definition", "attribute", "string", "parenthesized_expression",
}


@lru_cache(maxsize=1)
def _python_parser():
    import tree_sitter_python
    from tree_sitter import Language, Parser

    return Parser(Language(tree_sitter_python.language()))


@dataclass
class Batch:
    ids: torch.Tensor  # [B, T] input with <mask> at masked hole slots
    targets: torch.Tensor  # [B, T] true tokens
    hole: torch.Tensor  # [B, T] bool: slot belongs to the hole (attends to everything)
    masked: torch.Tensor  # [B, T] bool: loss positions
    weight: torch.Tensor  # [B] 1/t per example


class ExampleSampler:
    def __init__(self, texts: list[str], tok: CodeTokenizer, seq_len: int, seed: int = 0,
                 plain_fraction: float = 0.2):
        self.texts = [t for t in texts if len(t) > 200]
        self.tok, self.seq_len, self.plain_fraction = tok, seq_len, plain_fraction
        self.rng = random.Random(seed)
        sizes = [len(t) for t in self.texts]
        self.cum = list(_accumulate(sizes))

    def _pick_text(self) -> str:
        x = self.rng.random() * self.cum[-1]
        lo, hi = 0, len(self.cum) - 1
        while lo < hi:
            mid = (lo + hi) // 2
            if self.cum[mid] < x:
                lo = mid + 1
            else:
                hi = mid
        return self.texts[lo]

    # -- choosing the middle -------------------------------------------------------------
    def _line_span(self, text: str, pos: int) -> tuple[int, int]:
        start = text.rfind("\n", 0, pos) + 1
        n_lines = 1 if self.rng.random() < 0.5 else self.rng.randint(2, 12)
        end = start
        for _ in range(n_lines):
            nl = text.find("\n", end)
            end = len(text) if nl < 0 else nl + 1
            if end >= len(text):
                break
        return start, end

    def _rest_of_line(self, text: str, pos: int) -> tuple[int, int]:
        start = text.rfind("\n", 0, pos) + 1
        end = text.find("\n", pos)
        end = len(text) if end < 0 else end
        cut = self.rng.randint(start, max(start, end - 1))
        return cut, end

    def _syntax_span(self, text: str, pos: int) -> tuple[int, int] | None:
        lo = max(0, text.rfind("\n", 0, max(0, pos - 1500)) + 1)
        hi = text.find("\n", pos + 1500)
        hi = len(text) if hi < 0 else hi
        chunk = text[lo:hi]
        data = chunk.encode("utf-8")
        tree = _python_parser().parse(data)
        byte_pos = len(text[lo:pos].encode("utf-8"))
        node = tree.root_node.descendant_for_byte_range(byte_pos, byte_pos)
        options = []
        while node is not None:
            if node.type in SPAN_NODE_TYPES and 2 < node.end_byte - node.start_byte < 1500:
                options.append(node)
            node = node.parent
        if not options:
            return None
        node = self.rng.choice(options)
        s = len(data[: node.start_byte].decode("utf-8", "replace"))
        e = len(data[: node.end_byte].decode("utf-8", "replace"))
        return lo + s, lo + e

    def _middle(self, text: str) -> tuple[int, int]:
        pos = self.rng.randrange(len(text))
        r = self.rng.random()
        span = None
        if r < 0.4:
            span = self._line_span(text, pos)
        elif r < 0.8:
            span = self._syntax_span(text, pos)
        if span is None:
            span = self._rest_of_line(text, pos)
        return span

    # -- building sequences ------------------------------------------------------------------
    def _span_example(self):
        text = self._pick_text()
        s, e = self._middle(text)
        budget = self.seq_len * 5  # characters of context that surely cover seq_len tokens
        pre, mid, suf = self.tok.encode_batch([text[max(0, s - budget):s], text[s:e], text[e:e + budget]])
        max_hole = min(MAX_HOLE, self.seq_len // 2)
        mid = mid[:max_hole]
        r = self.rng.random()
        if r < 0.25:
            n_slots = len(mid)
        elif r < 0.5:
            n_slots = self.rng.randint(len(mid), min(max_hole, max(32, 2 * len(mid))))
        else:
            n_slots = self.rng.randint(len(mid), max_hole)
        n_slots = max(n_slots, 1)
        hole_targets = mid + [self.tok.pad_id] * (n_slots - len(mid))
        room = self.seq_len - n_slots
        n_pre = min(len(pre), max(room - len(suf), int(room * self.rng.uniform(0.5, 0.9))))
        n_suf = min(len(suf), room - n_pre)
        n_pre = min(len(pre), room - n_suf)
        pre = pre[len(pre) - n_pre:]
        targets = pre + hole_targets + suf[:n_suf]
        hole = [False] * len(pre) + [True] * n_slots + [False] * n_suf
        pad = self.seq_len - len(targets)  # short files: pad the tail, outside the hole, never attended as hole
        targets += [self.tok.pad_id] * pad
        hole += [False] * pad
        return targets, hole

    def _plain_example(self):
        text = self._pick_text()
        start = self.rng.randrange(max(1, len(text) - self.seq_len * 4))
        ids = self.tok.encode(text[start:start + self.seq_len * 5])[: self.seq_len]
        ids += [self.tok.doc_id] * (self.seq_len - len(ids))
        return ids, [True] * self.seq_len

    def batch(self, batch_size: int) -> Batch:
        targets, holes, ts = [], [], []
        for _ in range(batch_size):
            plain = self.rng.random() < self.plain_fraction
            t_ids, hole = self._plain_example() if plain else self._span_example()
            targets.append(t_ids)
            holes.append(hole)
            ts.append(max(self.rng.random(), 1e-3))
        targets_t = torch.tensor(targets)
        hole_t = torch.tensor(holes)
        t = torch.tensor(ts)
        masked = hole_t & (torch.rand(hole_t.shape, generator=None) < t[:, None])
        # At least one masked slot per example, so every example carries signal.
        none = ~masked.any(1)
        if none.any():
            first = hole_t.float().argmax(1)
            masked[none, first[none]] = True
        ids = torch.where(masked, torch.full_like(targets_t, self.tok.mask_id), targets_t)
        return Batch(ids, targets_t, hole_t, masked, 1.0 / t)


def _accumulate(xs):
    total = 0
    for x in xs:
        total += x
        yield total
