"""The engine core: tokenizer, model, context cache, sampler schedules, the request contract."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from infill_engine.backends.bundled import WEIGHTS_DIR, BundledBackend
from infill_engine.engine import Engine
from infill_engine.model import ModelConfig, Transformer
from infill_engine.request import InfillCancelled, InfillError, InfillRequest, SamplerSettings
from infill_engine.tokenizer import CodeTokenizer

TOK = CodeTokenizer.load(WEIGHTS_DIR / "tokenizer.json")


# -- tokenizer ------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_tokenizer_round_trips_any_text(text):
    assert TOK.decode(TOK.encode(text)) == text


@pytest.mark.parametrize("text", ["\tif x:\r\n\t\treturn 'ünï©ødé ✓'\r\n", "    " * 8 + "pass\n", "", "<mask>"])
def test_tokenizer_round_trips_source(text):
    assert TOK.decode(TOK.encode(text)) == text


def test_literal_special_token_text_is_not_a_special_token():
    # "<mask>" typed in a file is text; it must never turn into the mask id.
    assert TOK.mask_id not in TOK.encode("x = '<mask>'")


# -- model and context cache ------------------------------------------------------------------

def tiny_model(seed=0, **kw) -> Transformer:
    torch.manual_seed(seed)
    cfg = ModelConfig(vocab_size=TOK.vocab_size, dim=32, n_layers=2, n_heads=2, ffn_hidden=64, max_seq_len=256, **kw)
    return Transformer(cfg).eval()


@pytest.mark.parametrize("holes", [[(10, 18)], [(0, 5)], [(40, 48)], [(5, 9), (20, 24), (30, 34)]])
def test_cached_hole_step_equals_full_forward(holes):
    model = tiny_model()
    L = 48
    ids = torch.randint(3, TOK.vocab_size, (1, L)).repeat(2, 1)  # candidates share the context
    hole = torch.zeros(L, dtype=torch.bool)
    for a, b in holes:
        hole[a:b] = True
    ids[:, hole] = TOK.mask_id
    ids[1, hole.nonzero()[0]] = 7  # rows differ inside the hole only (candidates)
    positions = torch.arange(L)
    with torch.no_grad():
        full = model(ids, hole)[:, hole]
        cache = model.prefill(ids[:1, ~hole], positions[~hole]) if (~hole).any() else None
        cached = model.forward_hole(ids[:, hole], positions[hole], cache)
    # Exact up to float summation order: context never attends to the hole.
    assert torch.allclose(full, cached, atol=1e-5), (full - cached).abs().max()
    select = torch.rand(cached.shape[:2]) < 0.5
    with torch.no_grad():
        packed = model.forward_hole(ids[:, hole], positions[hole], cache, select)
    assert torch.allclose(packed, cached[select], atol=1e-5)  # only the output layer is skipped
    # The engine's way: one HoleSteps a hole, buffers written once, steps over fewer rows later.
    steps = model.hole_steps(cache, positions[hole])
    changed = ids.clone()
    changed[0, hole.nonzero()[-1]] = 9  # a later step: other slots committed
    with torch.no_grad():
        first = steps.logits(ids[:, hole])
        later = steps.logits(changed[:, hole])
        one_row = steps.logits(changed[1:, hole], select[1:])
        expected = model.forward_hole(changed[:, hole], positions[hole], cache)
    assert torch.allclose(first, cached, atol=1e-5)
    assert torch.allclose(later, expected, atol=1e-5)
    assert not torch.allclose(later[0], first[0], atol=1e-5)  # the buffers took the new hole keys
    assert torch.allclose(one_row, expected[1:][select[1:]], atol=1e-5)


def test_context_does_not_depend_on_the_hole_but_the_hole_sees_context():
    model = tiny_model()
    ids = torch.randint(3, TOK.vocab_size, (1, 30))
    hole = torch.zeros(30, dtype=torch.bool)
    hole[10:20] = True
    changed = ids.clone()
    changed[0, 12] = 5
    with torch.no_grad():
        a, b = model(ids, hole), model(changed, hole)
    assert torch.allclose(a[:, ~hole], b[:, ~hole], atol=1e-6)
    ctx_changed = ids.clone()
    ctx_changed[0, 25] = 5  # a suffix token
    with torch.no_grad():
        c = model(ctx_changed, hole)
    assert not torch.allclose(a[:, 10:20], c[:, 10:20], atol=1e-4)  # bidirectional: the hole sees the suffix


def test_save_load_round_trip(tmp_path):
    model = tiny_model()
    model.save(tmp_path, dtype=torch.float32)
    loaded = Transformer.load(tmp_path)
    ids = torch.randint(3, TOK.vocab_size, (1, 12))
    hole = torch.ones(12, dtype=torch.bool)
    with torch.no_grad():
        assert torch.equal(model(ids, hole), loaded(ids, hole))
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.pt"))  # safetensors only


# -- sampler schedules, with a scripted model --------------------------------------------------

class ScriptedBackend:
    """A backend whose every slot is certain about a fixed answer: lets tests count forwards
    exactly.  `confidence[i]` is the top-1 probability at slot i."""

    pad_trails = True
    is_random = False

    def __init__(self, answer: list[int], confidence: list[float], max_len: int = 256):
        self.answer, self.confidence = answer, confidence
        self.mask_id, self.pad_id = TOK.mask_id, TOK.pad_id
        self.banned_ids = [TOK.mask_id, TOK.doc_id]
        self.max_len, self.device, self.name = max_len, torch.device("cpu"), "scripted"
        self.vocab_size = TOK.vocab_size
        self.seen: list[torch.Tensor] = []

    def encode(self, text):
        return TOK.encode(text)

    def decode(self, ids):
        return TOK.decode(ids)

    def prepare(self, ids, hole):
        return hole

    def hole_logits(self, hole, ids):
        self.seen.append(ids.clone())
        n = int(hole.sum())
        logits = torch.full((ids.shape[0], n, TOK.vocab_size), -30.0)
        per_hole = len(self.answer)
        for j in range(n):
            i = j % per_hole
            p = self.confidence[i]
            logits[:, j, self.answer[i]] = math.log(p)
            logits[:, j, 100 + i] = math.log(1 - p)  # a runner-up, so p really is the top-1 probability
        return logits


def scripted(n=8, conf=None):
    answer = TOK.encode("x" * 0)[:0] + [TOK.encode(" value")[0]] * n
    return Engine(ScriptedBackend(answer, conf or [0.99] * n))


def test_one_token_per_step_uses_one_forward_per_token():
    engine = scripted(8)
    r = engine.infill(InfillRequest("a = ", "\n", length=8, sampler=SamplerSettings(strategy="confidence")))
    assert r.forwards == 8 and len(r.candidates[0].token_confidences) == 8


def test_fixed_schedule_and_step_budget():
    engine = scripted(8)
    assert engine.infill(InfillRequest("a", "b", length=8, sampler=SamplerSettings(strategy="fixed", tokens_per_step=3))).forwards == 3
    assert engine.infill(InfillRequest("a", "b", length=8, sampler=SamplerSettings(strategy="confidence", max_steps=2))).forwards == 2


def test_threshold_commits_all_confident_slots_at_once():
    conf = [0.99, 0.95, 0.5, 0.99, 0.6, 0.97, 0.3, 0.99]
    engine = scripted(8, conf)
    r = engine.infill(InfillRequest("a", "b", length=8, sampler=SamplerSettings(strategy="threshold", threshold=0.9)))
    # step 1 commits the five slots above 0.9; the three below go one per step.
    assert r.forwards == 1 + 3


class BannedFavouriteBackend(ScriptedBackend):
    """Every slot's favourite is a banned token (<doc>, 0.9); the allowed answer has 0.095."""

    def hole_logits(self, hole, ids):
        logits = super().hole_logits(hole, ids)
        logits[:, :, TOK.doc_id] = math.log(0.9)
        logits[:, :, self.answer[0]] = math.log(0.095)
        return logits


def test_banned_tokens_are_removed_before_the_softmax():
    """Renormalised without the banned favourite, the answer is ~95 % likely, so the threshold
    rule commits every slot in one forward; banning after the softmax left it at 9.5 %."""
    engine = Engine(BannedFavouriteBackend([TOK.encode(" value")[0]] * 6, [0.99] * 6))
    r = engine.infill(InfillRequest("a", "b", length=6, sampler=SamplerSettings(strategy="threshold", threshold=0.9)))
    assert r.forwards == 1 and r.text == " value" * 6
    assert min(r.candidates[0].token_confidences) > 0.9


def test_padding_is_dropped_and_trails():
    word = TOK.encode(" value")[0]
    answer = [word, word, TOK.pad_id, TOK.pad_id, TOK.pad_id, TOK.pad_id]
    engine = Engine(ScriptedBackend(answer, [0.6, 0.6, 0.99, 0.95, 0.9, 0.9]))
    r = engine.infill(InfillRequest("a =", "\n", max_length=6, lengths=(), heal=False,  # slots as given
                                    sampler=SamplerSettings(strategy="confidence")))
    assert r.text == " value value"
    # The model settles the length (no lengths to try).  Expected text slots = sum of P(not pad) = 2.26 -> 2: the four pads settle at the first step,
    # then the two text slots take one forward each.
    assert r.forwards == 2 and r.hole_tokens == 6


def test_auto_length_tries_each_length_as_one_row_and_finished_rows_drop_out():
    word = TOK.encode(" value")[0]
    backend = ScriptedBackend([word] * 8, [0.99] * 8)
    engine = Engine(backend)
    r = engine.infill(InfillRequest("a =", "\n", max_length=8, lengths=(5, 2, 20), heal=False,  # slots as given
                                    sampler=SamplerSettings(strategy="confidence")))
    assert sorted(len(c.token_confidences) for c in r.candidates) == [2, 5]  # 20 exceeds max_length
    assert r.hole_tokens == 5  # the longest length tried, not max_length: more would be padding in every row
    # One batch: both rows while the 2-token one is open, then the 5-token one alone.
    assert [ids.shape[0] for ids in backend.seen] == [2, 2, 1, 1, 1] and r.forwards == 5
    hole = engine._layout([TOK.encode("a ="), TOK.encode("\n")], 5).hole
    first = backend.seen[0][:, hole]
    assert (first[0, 2:] == TOK.pad_id).all() and (first[0, :2] == TOK.mask_id).all()
    assert (first[1] == TOK.mask_id).all()


def test_blank_candidates_rank_last_whatever_their_score():
    newline, word = TOK.encode("\n")[0], TOK.encode(" value")[0]
    engine = Engine(ScriptedBackend([newline, newline, word, word, word], [0.99, 0.99, 0.6, 0.6, 0.6]))
    r = engine.infill(InfillRequest("a = 1\n", "b = 2\n", max_length=5, lengths=(2, 5),
                                    sampler=SamplerSettings(strategy="confidence")))
    assert r.candidates[-1].text == "\n\n" and r.candidates[-1].score > r.candidates[0].score
    assert r.text.strip() == "value value value"


def test_fixed_length_never_pads():
    engine = Engine(ScriptedBackend([TOK.pad_id] * 4, [0.99] * 4))
    r = engine.infill(InfillRequest("a", "b", length=4))
    assert len(r.candidates[0].token_confidences) == 4


def test_tied_holes_receive_the_same_text():
    backend = ScriptedBackend([TOK.encode(" name")[0]] * 2, [0.9, 0.9])
    engine = Engine(backend)
    r = engine.infill(InfillRequest("def f(", "):\n    return 1\n", length=2, between=("):\n    return ",)))
    layout = engine._layout([TOK.encode("def f("), TOK.encode("):\n    return "), TOK.encode("):\n    return 1\n")], 2)
    for ids in backend.seen:  # at every step both holes hold the same slots
        first, second = ids[0, layout.hole].view(2, 2)
        assert torch.equal(first, second)
    assert r.text == " name name"


def test_context_cut_keeps_the_code_nearest_the_hole():
    backend = ScriptedBackend([5, 6], [0.99, 0.99], max_len=64)
    engine = Engine(backend)
    prefix = "".join(f"line{i} = {i}\n" for i in range(100))
    r = engine.infill(InfillRequest(prefix, "tail\n", length=2))
    assert r.context_cut > 0
    seen = backend.seen[0][0].tolist()
    assert TOK.decode(seen[:seen.index(TOK.mask_id)]).endswith("line99 = 99\n")


# -- the request contract with a real (tiny, random) model -----------------------------------------

@pytest.fixture(scope="module")
def tiny():
    return Engine.tiny_random()


@pytest.mark.parametrize("kwargs", [
    dict(max_length=12, lengths=(2, 5, 9)),  # length rows, finishing at different steps
    dict(max_length=12, lengths=()),  # the model settles the length
    dict(length=3, between=(")\n    return ",)),  # tied holes
    dict(max_length=8, candidates=3, sampler=SamplerSettings(temperature=1.0, seed=4)),
])
def test_reading_only_the_open_slots_logits_changes_nothing(tiny, kwargs):
    """The bundled backend returns logits for open slots only (`select`); the steps and the
    candidates must be those of reading every slot's logits."""
    req = InfillRequest("def f(x):\n    return ", "\n", **kwargs)
    packed = tiny.infill(req)
    tiny.backend.selects_slots = False  # the instance attribute hides the class's
    try:
        dense = tiny.infill(req)
    finally:
        del tiny.backend.selects_slots
    assert packed.forwards == dense.forwards
    assert [c.text for c in packed.candidates] == [c.text for c in dense.candidates]
    assert [c.score for c in packed.candidates] == pytest.approx([c.score for c in dense.candidates], abs=1e-4)


def test_deterministic_for_a_seed(tiny):
    req = lambda seed: InfillRequest("def f(x):\n    return ", "\n", max_length=12, candidates=2,
                                     sampler=SamplerSettings(temperature=1.0, seed=seed))
    a, b = tiny.infill(req(3)), tiny.infill(req(3))
    assert [c.text for c in a.candidates] == [c.text for c in b.candidates]


def test_progress_is_monotone_and_completes(tiny):
    seen = []
    tiny.infill(InfillRequest("x = ", "\n", length=10, sampler=SamplerSettings(strategy="confidence"),
                              progress=seen.append))
    assert len(seen) == 10 and seen == sorted(seen) and seen[-1] == 1.0


def test_cancel_stops_between_steps(tiny):
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(InfillCancelled):
        tiny.infill(InfillRequest("x = ", "\n", length=10, sampler=SamplerSettings(strategy="confidence"), cancel=cancel))
    assert len(calls) == 3


@pytest.mark.parametrize("prefix,suffix", [("", ""), ("", "\nprint(1)\n"), ("import os\n", ""), ("\ufffd\x00", "é")])
def test_holes_at_file_edges_and_odd_text(tiny, prefix, suffix):
    r = tiny.infill(InfillRequest(prefix, suffix, max_length=6))
    assert isinstance(r.text, str) and r.forwards >= 1


@pytest.mark.parametrize("kwargs", [{"length": 0}, {"length": 10_000}, {"max_length": 0}, {"candidates": 0},
                                    {"prefix": b"bytes"}])
def test_bad_requests_get_clear_errors(tiny, kwargs):
    fields = {"prefix": "x = ", "suffix": "\n", **kwargs}
    with pytest.raises(InfillError):
        tiny.infill(InfillRequest(**fields))


def test_unknown_sampler_is_rejected():
    with pytest.raises(InfillError, match="strategy"):
        SamplerSettings(strategy="beam")


def test_score_and_repair_keep_the_text_shape(tiny):
    scores = tiny.score("x = ", "foo(1, 2)", "\n")
    assert "".join(s.text for s in scores) == "foo(1, 2)"
    assert all(0 <= s.probability <= 1 for s in scores)
    repaired = tiny.repair("x = ", "foo(1, 2)", "\n", fraction=0.3)
    assert len(repaired.candidates[0].token_confidences) == len(TOK.encode("foo(1, 2)"))


def test_bundled_engine_loads_and_labels_random_weights():
    engine = Engine.load(None)
    assert isinstance(engine.backend, BundledBackend)
    assert engine.is_random == (not (WEIGHTS_DIR / "model.safetensors").exists())
    if engine.is_random:
        assert "RANDOM" in engine.name


def test_precision_auto_follows_the_hardware_and_outputs_stay_text(monkeypatch):
    import infill_engine.precision as precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    assert precision.resolve_dtype("auto", "cpu") == torch.float32
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert precision.resolve_dtype("auto", "cpu") == torch.bfloat16
    assert precision.resolve_dtype("fp32", "cpu") == torch.float32
    with pytest.raises(ValueError, match="precision must be one of"):
        precision.resolve_dtype("fp16", "cpu")
    engine = Engine.load(None, precision="bf16")
    assert engine.backend.dtype == torch.bfloat16
    r = engine.infill(InfillRequest("def add(a, b):\n    return ", "\n", length=4))
    assert r.forwards >= 1 and len(r.candidates[0].token_confidences) == 4
