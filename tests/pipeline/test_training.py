"""The training pipeline on tiny inputs: corpus -> shards -> dense batches -> a short run that learns,
resumes and warm-starts -> held-out lines; and the GPU script, run here on the CPU."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import pre_tokenizers

from infill_engine.engine import Engine
from infill_engine.model import ModelConfig, Transformer
from infill_engine.pipeline import bench, corpus, gpu_run, train
from infill_engine.pipeline.corpus import classify_license
from infill_engine.pipeline.heldout import evaluate_lines, evaluate_midline
from infill_engine.pipeline.shards import TokenStream, build_shards, cut_shards
from infill_engine.pipeline.windows import WindowSampler
from infill_engine.request import InfillRequest
from infill_engine.tokenizer import CodeTokenizer

REPO = Path(__file__).resolve().parents[2]


class Meta(dict):
    def get_all(self, key):
        value = self.get(key)
        return value if isinstance(value, list) else None


@pytest.mark.parametrize("meta,expected", [
    ({"License-Expression": "MIT"}, "MIT"),
    ({"Classifier": ["License :: OSI Approved :: BSD License"]}, "BSD"),
    ({"License": "Apache License 2.0"}, "Apache-2.0"),
    ({"License": "GPLv3"}, None),
    ({"Classifier": ["License :: OSI Approved :: GNU Lesser General Public License v3 (LGPLv3)"]}, None),
    ({"License": "MPL-2.0"}, None),
    ({}, None),
])
def test_license_allowlist(meta, expected):
    assert classify_license(Meta(meta)) == expected


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("corpus")
    manifest = corpus.build_corpus(out, max_bytes=1_500_000)
    return out, manifest


def test_corpus_manifest_and_split(small_corpus):
    out, manifest = small_corpus
    assert manifest["files"] > 10 and manifest["bytes"] >= 1_500_000
    entry = manifest["packages"][0]
    assert {"package", "version", "license", "files", "bytes", "sha256"} <= set(entry)
    assert json.loads((out / "manifest.json").read_text())["files"] == manifest["files"]
    train_texts = list(corpus.read_texts(out / "train.jsonl.gz"))
    valid_texts = list(corpus.read_texts(out / "valid.jsonl.gz"))
    assert train_texts and not set(train_texts) & set(valid_texts)  # split by file
    assert len(set(train_texts)) == len(train_texts)  # deduplicated by content
    assert not any("humaneval" in t.lower() for t in train_texts + valid_texts)


@pytest.fixture(scope="module")
def texts(small_corpus) -> list[str]:
    return list(corpus.read_texts(small_corpus[0] / "train.jsonl.gz"))


@pytest.fixture(scope="module")
def shards(small_corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("shards")
    build_shards(small_corpus[0], out, vocab=600, tokenizer_mb=0.5)
    return out


def test_tokenizer_trained_on_corpus_round_trips(texts):
    tok = CodeTokenizer.train(iter(texts[:50]), vocab_size=600)
    assert tok.vocab_size <= 600 and (tok.pad_id, tok.mask_id, tok.doc_id) == (0, 1, 2)
    for t in texts[:10]:
        assert tok.decode(tok.encode(t)) == t
    assert len(tok.encode(texts[0])) < len(texts[0].encode())  # it learned merges


def _line_cuts_that_differ(texts: list[str], encode, cuts: int = 300) -> int:
    """How many random line-aligned (prefix, middle, suffix) cuts encode differently apart than whole."""
    rng, differ = random.Random(0), 0
    for _ in range(cuts):
        text = rng.choice(texts)
        text = text[: text.find("\n", 3000) + 1 or None]  # a file's head is enough, and fast
        starts = [0] + [i + 1 for i, ch in enumerate(text) if ch == "\n"]
        a, b = sorted(rng.sample(starts, 2))
        pieces = [text[:a], text[a:b], text[b:]]
        differ += sum(map(encode, pieces), []) != encode(text)
    return differ


def _pre_tokens(tok: CodeTokenizer):
    return lambda text: [piece for piece, _ in tok.tok.pre_tokenizer.pre_tokenize_str(text)]


def test_line_aligned_holes_cut_from_the_stream_are_the_pieces_the_engine_encodes(texts):
    """The line-local tokenizer never merges across a line end, so training can cut holes out of the
    pre-tokenized stream and see exactly what inference builds; a plain GPT-2 split cannot."""
    tok = CodeTokenizer.train(iter(texts[:50]), vocab_size=600)
    assert tok.is_line_local
    assert _line_cuts_that_differ(texts, tok.encode) == 0
    assert _line_cuts_that_differ(texts, _pre_tokens(tok)) == 0
    # The GPT-2 split joins a line end to the next line's indentation ("\n   "), so once BPE
    # learns that merge, a hole at a line start would see other tokens in training than at use.
    tok.tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    assert not tok.is_line_local and _line_cuts_that_differ(texts, _pre_tokens(tok)) > 0


def test_shards_hold_every_file_once_with_its_doc_separator(shards, small_corpus):
    report = json.loads((shards / "shards.json").read_text())
    tok = CodeTokenizer.load(shards / "tokenizer.json")
    stream = TokenStream(shards, "train")
    assert len(stream) == report["train"]["tokens"] and len(stream.starts) == report["train"]["files"]
    ends = np.append(stream.starts[1:], len(stream)) - 1
    assert (stream.tokens[ends] == tok.doc_id).all()  # every file closed by <doc>
    first = tok.decode(stream.tokens[stream.starts[0]:ends[0]].tolist())
    assert first in set(corpus.read_texts(small_corpus[0] / "train.jsonl.gz"))


def test_a_capped_stream_stops_at_a_file_boundary(small_corpus, shards, tmp_path):
    build_shards(small_corpus[0], tmp_path, tokenizer=shards / "tokenizer.json", max_mib=0.1)
    capped, full = TokenStream(tmp_path, "train"), TokenStream(shards, "train")
    assert 0 < len(capped) <= 0.1 * (1 << 20) / 2
    assert (np.asarray(capped.tokens) == np.asarray(full.tokens[:len(capped)])).all()  # a leading slice
    assert len(capped) in set(full.starts.tolist())


def test_a_cut_slice_is_the_stream_after_the_skipped_files(shards, tmp_path):
    full, valid = TokenStream(shards, "train"), TokenStream(shards, "valid")
    skip = len(full.starts) // 3
    report = cut_shards(shards, tmp_path, skip, max_mib=0.2)
    cut = TokenStream(tmp_path, "train")
    start = int(full.starts[skip])
    assert 0 < len(cut) <= 0.2 * (1 << 20) / 2 and cut.starts[0] == 0
    assert (np.asarray(cut.tokens) == np.asarray(full.tokens[start:start + len(cut)])).all()
    assert (cut.starts + start).tolist() == full.starts[skip:skip + len(cut.starts)].tolist()  # whole files
    assert report["train"]["first_file"] == skip and len(TokenStream(tmp_path, "valid")) == len(valid)  # uncapped: all of it
    assert (tmp_path / "tokenizer.json").read_bytes() == (shards / "tokenizer.json").read_bytes()
    with pytest.raises(ValueError):
        cut_shards(shards, tmp_path, len(full.starts), max_mib=1)


def test_dense_batches_are_the_stream_with_padded_holes_laid_out_context_first(shards):
    tok = CodeTokenizer.load(shards / "tokenizer.json")
    stream = np.asarray(TokenStream(shards, "train").tokens)
    sampler = WindowSampler(stream, tok, seq_len=96, seed=3)
    haystack = stream.astype("<u2").tobytes()
    kinds, text_loss, any_loss = set(), [], []
    for _ in range(30):
        b = sampler.batch(8)
        kinds.add(b.n_context == 0)
        text_loss.append(b.text_loss_fraction(tok.pad_id))
        any_loss.append(float(b.masked.float().mean()))
        assert (b.ids[b.masked] == tok.mask_id).all() and b.masked.any(1).all()
        assert not b.masked[:, :b.n_context].any()  # loss only in the hole
        for row in range(8):
            order = b.positions[row].argsort()
            assert sorted(order.tolist()) == list(range(96))  # positions: a permutation
            logical = b.targets[row][order]
            in_hole = order >= b.n_context
            # Read in place, without the pads, the example is one contiguous slice of the stream.
            needle = logical[logical != tok.pad_id].numpy().astype("<u2").tobytes()
            assert _aligned_find(haystack, needle) >= 0
            # Each hole is its text, then its pads: a pad is never followed by text in the same hole.
            pad = (logical == tok.pad_id).numpy()
            for i in range(95):
                if in_hole[i] and in_hole[i + 1] and pad[i]:
                    assert pad[i + 1]
    assert kinds == {True, False}  # plain and hole batches both occur
    # Dense: ≈ 0.29 of positions carry loss on a text token (0.36 on any slot, pads included);
    # the old small holes put loss on 14 % of positions.
    assert np.mean(text_loss) >= 0.22 and np.mean(any_loss) >= 0.3


def _aligned_find(haystack: bytes, needle: bytes) -> int:
    """bytes.find at a token (2-byte) boundary."""
    at = haystack.find(needle)
    while at >= 0 and at % 2:
        at = haystack.find(needle, at + 1)
    return at


def test_split_attention_is_exactly_the_hole_mask_rule():
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=100, dim=32, n_layers=2, n_heads=2, ffn_hidden=64)).eval()
    ids = torch.randint(0, 100, (3, 20))
    hole = torch.zeros(3, 20, dtype=torch.bool)
    for row in range(3):
        hole[row, torch.randperm(20)[:8]] = True
    order = torch.stack([torch.cat([torch.nonzero(~h).flatten(), torch.nonzero(h).flatten()]) for h in hole])
    reference = torch.gather(model.hidden(ids, hole), 1, order[..., None].expand(-1, -1, 32))
    split = model.hidden_split(torch.gather(ids, 1, order), order, n_context=12)
    assert torch.allclose(reference, split, atol=1e-5)


def _train_args(shards: Path, out: Path) -> list[str]:
    return ["--shards", str(shards), "--out", str(out), "--preset", "tiny", "--batch", "16", "--lr", "3e-3",
            "--warmup", "5", "--val-every", "10", "--save-every", "20", "--seed", "1"]


def test_a_short_training_run_lowers_the_validation_loss_resumes_and_warm_starts(shards, tmp_path, capsys):
    args = _train_args(shards, tmp_path / "run")
    torch.manual_seed(0)
    assert train.main(args + ["--steps", "20"]) == 0
    assert "torch.compile failed" not in capsys.readouterr().out  # the CPU default: compiled, no fallback
    assert json.loads((tmp_path / "run" / "ckpt.json").read_text())["step"] == 20
    assert train.main(args + ["--steps", "80", "--export", str(tmp_path / "export")]) == 0
    history = json.loads((tmp_path / "run" / "ckpt.json").read_text())["history"]
    vals = [h["val_text"] for h in history if "val_text" in h]
    assert history[-1]["step"] == 80 and history[-1]["supervised"] > 0  # resumed, not restarted
    assert vals[-1] < vals[0] - 0.5, vals
    assert {"config.json", "model.safetensors", "tokenizer.json", "training.json"} <= {
        p.name for p in (tmp_path / "export").iterdir()}
    # A warm start continues where the export left off: its first validation is already low.
    warm = _train_args(shards, tmp_path / "warm") + ["--init-from", str(tmp_path / "export"), "--steps", "10"]
    assert train.main(warm) == 0
    first_warm = json.loads((tmp_path / "warm" / "ckpt.json").read_text())["history"][-1]["val_text"]
    assert first_warm < vals[0] - 0.5


def test_warm_start_refuses_a_model_of_another_tokenizer(shards, tmp_path):
    model_dir = tmp_path / "other"
    Transformer(ModelConfig(vocab_size=600, dim=32, n_layers=1, n_heads=2, ffn_hidden=64)).save(model_dir)
    (model_dir / "tokenizer.json").write_text((REPO / "infill_engine" / "weights" / "tokenizer.json").read_text())
    with pytest.raises(SystemExit, match="another tokenizer"):
        train.main(_train_args(shards, tmp_path / "run") + ["--init-from", str(model_dir), "--steps", "2"])


def test_exported_weights_split_under_a_file_cap_load_back_equal(tmp_path):
    torch.manual_seed(0)
    model = Transformer(ModelConfig(vocab_size=600, dim=64, n_layers=2, n_heads=2, ffn_hidden=128))
    model.save(tmp_path, max_file_bytes=100_000)
    files = Transformer.weight_files(tmp_path)
    assert len(files) > 1 and all(f.stat().st_size < 100_000 + 4096 for f in files)
    back = Transformer.load(tmp_path)
    for (name, a), (_, b) in zip(model.state_dict().items(), back.state_dict().items()):
        assert torch.equal(a.to(torch.bfloat16).float(), b), name


def test_the_gpu_script_runs_on_the_cpu_with_a_tiny_preset(shards, tmp_path):
    """scripts/train-on-gpu.sh end to end (train, export, evaluate, report), so it is known to work
    before a GPU is ever lent; then `unpack` gives a model folder the engine loads."""
    env = {**os.environ, "PYTHON": sys.executable}
    out, work = tmp_path / "out", tmp_path / "work"
    run = subprocess.run(["bash", str(REPO / "scripts" / "train-on-gpu.sh"), str(out), "--shards", str(shards),
                          "--presets", "tiny", "--minutes", "0.25", "--device", "cpu", "--workers", "1",
                          "--no-compile", "--eval-limit", "2", "--eval-timeout", "120", "--work", str(work)],
                         env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout + run.stderr
    report = json.loads((out / "report.json").read_text())
    entry = report["models"]["tiny"]
    assert entry["train_exit"] == 0 and entry["training"]["tokens_seen"] > 0
    assert sorted(p.name for p in out.iterdir()) == ["report.json", "tiny.model.safetensors"]
    if "eval" in entry:  # HumanEval-Infilling is found where CI keeps it
        assert entry["eval"]["n"] == 2
    [folder] = gpu_run.unpack(out, shards, tmp_path / "models")
    engine = Engine.load(str(folder))
    result = engine.infill(InfillRequest(prefix="def f(x):\n", suffix="\n", length=4))
    assert result.forwards >= 1 and len(result.candidates) == 1


def test_held_out_lines_are_scored_three_ways(small_corpus, shards, tmp_path):
    args = _train_args(shards, tmp_path / "run") + ["--steps", "30", "--export", str(tmp_path / "m")]
    assert train.main(args) == 0
    report = evaluate_lines(Engine.load(str(tmp_path / "m")), small_corpus[0], n=8)
    assert report["lines"] >= 1
    assert 0 < report["ce_per_token"] < 10 and 0 <= report["first_step_top1"] <= 1 and 0 <= report["exact"] <= 1
    assert all(r["line"].endswith("\n") or r["line"].strip() for r in report["records"])
    # the same lines cut at a random character: the rest of the line, healed and not
    midline = evaluate_midline(Engine.load(str(tmp_path / "m")), small_corpus[0], n=8)
    assert midline["lines"] >= 1 and len(midline["records"]) == midline["lines"]
    for r in midline["records"]:
        assert r["typed"].strip() and r["rest"] and "\n" not in r["rest"]
        assert "\n" not in r["healed"] and "\n" not in r["unhealed"]  # up to the line end
    assert midline["healed_exact"] == sum(r["healed"] == r["rest"] for r in midline["records"])


def test_the_compiled_training_step_is_benchmarked_beside_the_eager_ways():
    r = bench.bench_training(32, 1, 2, 2, 32, repeats=1, compile=True)
    assert "fp32 masked" in r["tokens_per_s"] and "bf16 split fused-adamw compiled" in r["tokens_per_s"]
    assert all(rate > 0 for rate in r["tokens_per_s"].values())
    assert list(r["compile_s"]) == ["bf16 split fused-adamw compiled"]  # build time apart from tokens/s
