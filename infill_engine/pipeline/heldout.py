"""`diffill eval --data lines`: held-out lines, a metric that moves before pass@1 does.

Lines are drawn (fixed seed) from the corpus's validation files, which training never reads.
Each line is masked whole (indentation through the newline) at its true token length, and
the model is scored three ways:
  ce        cross-entropy per token with every slot of the line masked (one forward);
  top1      the share of its tokens the model's first forward already gets right;
  exact     the share of lines the engine's decoding (oracle length) reproduces exactly;
  auto      the same with the length left to the engine (AUTO_SLOTS slots, each of `lengths` tried,
            the syntax-preserving candidate first, as in `diffill eval`), and how far its length
            is from the line's (mean absolute difference in tokens).
Context is cut to `BEFORE` tokens before and `AFTER` after the line, inside any model's window.

`evaluate_midline` (`diffill eval --data midline`) is what an editor asks most: the cursor at a
random character inside a line (after its indentation), the rest of the line to write, at most
MIDLINE_SLOTS tokens as the language server allows; right when the best candidate, up to its
line end, is exactly the rest of the line.  Each line is asked twice, with and without token
healing (healing.py), so the report shows what healing buys, side by side.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path

import torch
import torch.nn.functional as F

from ..request import InfillOptions, InfillRequest, SamplerSettings
from ..ranking import best_first
from .corpus import read_texts

BEFORE, AFTER, MAX_LINE_TOKENS = 320, 128, 64
AUTO_SLOTS = 32  # what `diffill eval --data single --length auto` opens
MIDLINE_SLOTS = 16  # the language server's budget for the rest of a line (lsp_server/features/inline.py)


@dataclass(frozen=True)
class HeldOutLine:
    prefix: str
    line: str
    suffix: str


def sample_lines(corpus: Path, n: int, seed: int = 0) -> list[HeldOutLine]:
    """n non-blank lines from distinct validation files, always the same ones for a seed."""
    rng = random.Random(seed)
    texts = sorted(read_texts(corpus / "valid.jsonl.gz"))
    rng.shuffle(texts)
    out = []
    for text in texts:
        lines = [line + "\n" for line in text.split("\n")]
        lines[-1] = lines[-1][:-1]  # the text's own ending, with or without a newline
        starts = list(accumulate(map(len, lines), initial=0))
        candidates = [i for i, line in enumerate(lines) if line.strip()]
        if not candidates:
            continue
        i = rng.choice(candidates)
        s, e = starts[i], starts[i + 1]
        out.append(HeldOutLine(text[:s], text[s:e], text[e:]))
        if len(out) == n:
            break
    return out


@torch.no_grad()
def first_step_scores(model, tok, item: HeldOutLine) -> tuple[float, int, int] | None:
    """(summed CE, tokens right at the first step, tokens) for one line, or None if it is too long."""
    pre, mid, suf = tok.encode(item.prefix)[-BEFORE:], tok.encode(item.line), tok.encode(item.suffix)[:AFTER]
    if not mid or len(mid) > MAX_LINE_TOKENS:
        return None
    device = next(model.parameters()).device
    ids = torch.tensor([pre + [tok.mask_id] * len(mid) + suf], device=device)
    hole = torch.zeros(ids.shape[1], dtype=torch.bool, device=device)
    hole[len(pre):len(pre) + len(mid)] = True
    logits = model(ids, hole)[0, hole].float()
    logits[:, [tok.mask_id, tok.doc_id]] = float("-inf")
    target = torch.tensor(mid, device=device)
    ce = F.cross_entropy(logits, target, reduction="sum").item()
    return ce, int((logits.argmax(-1) == target).sum()), len(mid)


def evaluate_lines(engine, corpus: Path, n: int = 100, seed: int = 0,
                   sampler: SamplerSettings = SamplerSettings(), out: Path | None = None,
                   lengths: tuple[int, ...] = InfillOptions.lengths) -> dict:
    model, tok = engine.backend.model, engine.backend.tok
    items = sample_lines(corpus, n, seed)
    ce_sum = right = tokens = exact = scored = 0
    forwards = committed = auto_exact = length_error = 0
    records = []
    t0 = time.perf_counter()
    for item in items:
        scores = first_step_scores(model, tok, item)
        if scores is None:
            continue
        scored += 1
        ce_sum, right, tokens = ce_sum + scores[0], right + scores[1], tokens + scores[2]
        result = engine.infill(InfillRequest(prefix=item.prefix, suffix=item.suffix, length=scores[2],
                                             max_length=max(scores[2], 1), sampler=sampler))
        exact += result.text == item.line
        forwards += result.forwards
        committed += scores[2]
        auto = engine.infill(InfillRequest(prefix=item.prefix, suffix=item.suffix, max_length=AUTO_SLOTS,
                                           sampler=sampler, lengths=lengths))
        best = best_first(item.prefix, item.suffix, auto.candidates, "python")[0]
        auto_exact += best.text == item.line
        length_error += abs(len(best.token_confidences) - scores[2])
        # Every auto candidate, in the engine's order: a ranking rule can be re-scored offline.
        records.append({"line": item.line, "got": result.text, "auto": best.text,
                        "ce": round(scores[0] / scores[2], 3), "candidates": [c.text for c in auto.candidates]})
    report = {"model": engine.name, "lines": scored, "seed": seed, "ce_per_token": round(ce_sum / max(tokens, 1), 4),
              "first_step_top1": round(right / max(tokens, 1), 4), "exact": round(exact / max(scored, 1), 4),
              "exact_count": exact, "auto_exact": round(auto_exact / max(scored, 1), 4),
              "auto_length_error": round(length_error / max(scored, 1), 2), "tokens_per_forward": round(committed / max(forwards, 1), 3),
              "sampler": sampler.strategy, "wall_s": round(time.perf_counter() - t0, 1), "records": records}
    if out is not None:
        Path(out).write_text(json.dumps(report, indent=1) + "\n")
    return report


def evaluate_midline(engine, corpus: Path, n: int = 100, seed: int = 0,
                     sampler: SamplerSettings = SamplerSettings(), out: Path | None = None,
                     lengths: tuple[int, ...] = InfillOptions.lengths) -> dict:
    """Rest-of-line completion from a random character of held-out lines, healed and not."""
    rng = random.Random(seed)
    counts = {"healed": 0, "unhealed": 0}
    records, asked = [], 0
    t0 = time.perf_counter()
    for item in sample_lines(corpus, n, seed):
        body = item.line.rstrip("\n")
        indent = len(body) - len(body.lstrip())
        if len(body) - indent < 2:
            continue
        cut = rng.randrange(indent + 1, len(body))
        prefix, rest, suffix = item.prefix + body[:cut], body[cut:], item.line[len(body):] + item.suffix
        asked += 1
        record = {"typed": body[:cut], "rest": rest}
        for way in counts:
            result = engine.infill(InfillRequest(prefix=prefix, suffix=suffix, max_length=MIDLINE_SLOTS,
                                                 sampler=sampler, lengths=lengths, heal=way == "healed"))
            best = best_first(prefix, suffix, result.candidates, "python")[0].text.split("\n", 1)[0]
            counts[way] += best == rest
            record[way] = best
        records.append(record)
    report = {"model": engine.name, "lines": asked, "seed": seed,
              **{f"{way}_exact": counts[way] for way in counts},
              "wall_s": round(time.perf_counter() - t0, 1), "records": records}
    if out is not None:
        Path(out).write_text(json.dumps(report, indent=1) + "\n")
    return report
