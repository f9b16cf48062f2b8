"""The training pipeline on tiny inputs: corpus -> tokenizer -> examples -> a short run that learns."""

from __future__ import annotations

import json

import pytest
import torch

from infill_engine.pipeline import corpus, train
from infill_engine.pipeline.corpus import classify_license
from infill_engine.tokenizer import CodeTokenizer
from infill_engine.pipeline.training_data import ExampleSampler


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


def test_tokenizer_trained_on_corpus_round_trips(small_corpus):
    out, _ = small_corpus
    texts = list(corpus.read_texts(out / "train.jsonl.gz"))[:50]
    tok = CodeTokenizer.train(iter(texts), vocab_size=600)
    assert tok.vocab_size <= 600 and (tok.pad_id, tok.mask_id, tok.doc_id) == (0, 1, 2)
    for t in texts[:10]:
        assert tok.decode(tok.encode(t)) == t
    assert len(tok.encode(texts[0])) < len(texts[0].encode())  # it learned merges


def test_examples_hold_a_padded_hole_with_separately_tokenized_context(small_corpus):
    out, _ = small_corpus
    texts = list(corpus.read_texts(out / "train.jsonl.gz"))[:40]
    tok = CodeTokenizer.train(iter(texts), vocab_size=600)
    batch = ExampleSampler(texts, tok, seq_len=128, seed=0, plain_fraction=0.0).batch(16)
    assert batch.ids.shape == (16, 128)
    assert (batch.masked <= batch.hole).all() and batch.masked.any(1).all()
    assert (batch.ids[batch.masked] == tok.mask_id).all()
    for row in range(16):
        slots = batch.targets[row][batch.hole[row]].tolist()
        text = [t for t in slots if t != tok.pad_id]
        assert slots[: len(text)] == text  # padding only after the hole's text


def test_a_short_training_run_lowers_the_validation_loss_and_resumes(small_corpus, tmp_path):
    out, _ = small_corpus
    args = ["--corpus", str(out), "--out", str(tmp_path / "run"), "--vocab", "512", "--tokenizer-mb", "0.5",
            "--train-mb", "0.5", "--dim", "32", "--layers", "1", "--heads", "2", "--seq-len", "64",
            "--batch", "16", "--lr", "3e-3", "--warmup", "5", "--val-every", "10", "--save-every", "20"]
    torch.manual_seed(0)
    assert train.main(args + ["--steps", "20"]) == 0
    first = json.loads((tmp_path / "run" / "ckpt.json").read_text())
    assert first["step"] == 20
    assert train.main(args + ["--steps", "60", "--export", str(tmp_path / "export")]) == 0
    history = json.loads((tmp_path / "run" / "ckpt.json").read_text())["history"]
    vals = [h["val"] for h in history if "val" in h]
    assert history[-1]["step"] == 60 and len(history) == 60  # resumed, not restarted
    assert vals[-1] < vals[0] - 0.5, vals
    exported = sorted(p.name for p in (tmp_path / "export").iterdir())
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= set(exported)
