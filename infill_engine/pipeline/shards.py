"""`diffill shards`: the corpus tokenized once, into compact token streams training reads.

A shard folder holds, per split, `<split>.bin` (uint16 token ids; every file is followed by
one `<doc>` token) and `<split>.idx.npy` (int64 offset of each file's first token), plus the
`tokenizer.json` that made them and `shards.json` (counts, tokenizer sha256).

Files are written in a fixed shuffled order, so any leading slice of a stream is a fair sample
of the whole corpus: `--max-mib` caps a stream at a file boundary (a GPU run carries ≤ 40 MiB).
The tokenizer is line-local (see tokenizer.py), so a line-aligned hole cut out of the stream
holds exactly the tokens the engine gets by encoding prefix, middle and suffix apart.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import shutil
import time
from itertools import islice
from pathlib import Path
from typing import Iterator

import numpy as np

from ..tokenizer import CodeTokenizer
from .corpus import read_texts

SPLITS = ("train", "valid")
ENCODE_CHUNK = 512  # files per encode_batch call: big enough for the tokenizer's own threads


class TokenStream:
    """One split of a shard folder, memory-mapped: `tokens[i]` and the file offsets."""

    def __init__(self, directory: str | Path, split: str = "train"):
        directory = Path(directory)
        self.tokens = np.memmap(directory / f"{split}.bin", dtype=np.uint16, mode="r")
        self.starts = np.load(directory / f"{split}.idx.npy")

    def __len__(self) -> int:
        return len(self.tokens)


def fit_tokenizer(corpus: Path, vocab: int, mb: float, seed: int = 0) -> CodeTokenizer:
    """A tokenizer fitted on `mb` MB of training files drawn across the whole corpus."""
    texts = _shuffled(read_texts(corpus / "train.jsonl.gz"), seed)
    sample, total = [], 0
    for text in texts:
        sample.append(text)
        total += len(text)
        if total >= mb * 1e6:
            break
    return CodeTokenizer.train(iter(sample), vocab_size=vocab)


def write_split(tok: CodeTokenizer, texts: list[str], out: Path, split: str, max_tokens: int | None) -> dict:
    """Encode `texts` in order into `<split>.bin` / `<split>.idx.npy`; stop at a file boundary
    before `max_tokens`."""
    if tok.vocab_size > 1 << 16:
        raise ValueError(f"uint16 shards need a vocabulary of at most 65,536 tokens, not {tok.vocab_size}")
    starts, n, full = [], 0, False
    with open(out / f"{split}.bin", "wb") as f:
        it = iter(texts)
        while not full and (chunk := list(islice(it, ENCODE_CHUNK))):
            for ids in tok.encode_batch(chunk):
                ids.append(tok.doc_id)
                if max_tokens is not None and n + len(ids) > max_tokens:
                    full = True
                    break
                starts.append(n)
                f.write(np.asarray(ids, dtype=np.uint16).tobytes())
                n += len(ids)
    files = len(starts)
    np.save(out / f"{split}.idx.npy", np.asarray(starts, dtype=np.int64))
    return {"files": files, "tokens": n, "chars": sum(len(t) for t in texts[:files])}


def build_shards(corpus: Path, out: Path, tokenizer: Path | None = None, vocab: int = 8192,
                 tokenizer_mb: float = 40.0, max_mib: float | None = None, seed: int = 0) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    tok = CodeTokenizer.load(tokenizer) if tokenizer else fit_tokenizer(corpus, vocab, tokenizer_mb, seed)
    if not tok.is_line_local:
        raise ValueError("shards need a line-local tokenizer (fit a new one: leave out --tokenizer)")
    tok.save(out / "tokenizer.json")
    fit_s = time.time() - t0
    report = {"corpus": str(corpus), "vocab": tok.vocab_size, "tokenizer_sha256":
              hashlib.sha256((out / "tokenizer.json").read_bytes()).hexdigest(), "tokenizer_seconds": round(fit_s)}
    max_tokens = int(max_mib * (1 << 20) / 2) if max_mib else None
    for split in SPLITS:
        texts = list(_shuffled(read_texts(corpus / f"{split}.jsonl.gz"), seed))
        t1 = time.time()
        report[split] = write_split(tok, texts, out, split, max_tokens if split == "train" else None)
        secs = time.time() - t1
        report[split]["seconds"] = round(secs, 1)
        report[split]["chars_per_token"] = round(report[split]["chars"] / max(1, report[split]["tokens"]), 3)
        report[split]["mb_per_s"] = round(report[split]["chars"] / 1e6 / max(secs, 1e-9), 2)
    (out / "shards.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def cut_shards(source: Path, out: Path, skip_files: int, max_mib: float, valid_tokens: int | None = None) -> dict:
    """A shard folder holding a slice of another without tokenizing again: the train files from
    `skip_files` on, up to `max_mib`, and the first `valid_tokens` of the validation stream
    (whole files).  For runs that add up: each lent GPU takes the next slice of the stream
    within the machine's transfer cap (v2.1 trained on files 5,686 on, after v2's 40 MiB)."""
    out.mkdir(parents=True, exist_ok=True)
    report = json.loads((source / "shards.json").read_text())
    caps = {"train": (skip_files, int(max_mib * (1 << 20) / 2)), "valid": (0, valid_tokens)}
    for split, (first, cap) in caps.items():
        stream = TokenStream(source, split)
        if first >= len(stream.starts):
            raise ValueError(f"{source} has {len(stream.starts)} {split} files; cannot skip {first}")
        ends = np.append(stream.starts[1:], len(stream))
        start = int(stream.starts[first])
        last = len(ends) - 1 if cap is None else int(np.searchsorted(ends, start + cap, side="right")) - 1
        if last < first:
            raise ValueError(f"the first {split} file after {first} is longer than the cap")
        np.asarray(stream.tokens[start:ends[last]]).tofile(out / f"{split}.bin")
        np.save(out / f"{split}.idx.npy", (stream.starts[first:last + 1] - start).astype(np.int64))
        report[split] = {"files": last + 1 - first, "tokens": int(ends[last] - start), "first_file": first,
                         "cut_from": str(source)}
    shutil.copy(source / "tokenizer.json", out / "tokenizer.json")
    (out / "shards.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def _shuffled(texts: Iterator[str], seed: int) -> list[str]:
    items = list(texts)
    random.Random(seed).shuffle(items)
    return items


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="diffill shards", description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    ap.add_argument("--out", type=Path, default=Path("data/shards"))
    ap.add_argument("--tokenizer", type=Path, default=None,
                    help="encode with this tokenizer.json (default: fit a new one on the corpus)")
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--tokenizer-mb", type=float, default=40.0, help="MB of corpus to fit the tokenizer on")
    ap.add_argument("--max-mib", type=float, default=None, help="cap the train stream at this size")
    ap.add_argument("--cut-from", type=Path, default=None,
                    help="cut a slice of this shard folder instead of tokenizing (needs --max-mib)")
    ap.add_argument("--skip-files", type=int, default=0, help="with --cut-from: train files to skip")
    ap.add_argument("--valid-tokens", type=int, default=None, help="with --cut-from: cap the validation stream")
    args = ap.parse_args(argv)
    if args.cut_from is not None:
        if args.max_mib is None:
            ap.error("--cut-from needs --max-mib")
        r = cut_shards(args.cut_from, args.out, args.skip_files, args.max_mib, args.valid_tokens)
    else:
        r = build_shards(args.corpus, args.out, args.tokenizer, args.vocab, args.tokenizer_mb, args.max_mib)
    for split in SPLITS:
        s = r[split]
        print(f"{split}: {s['files']} files, {s['tokens']:,} tokens"
              + (f" ({s['chars_per_token']} chars/token), {s['mb_per_s']} MB/s" if "mb_per_s" in s else ""))
    print(f"written to {args.out}")
    return 0
