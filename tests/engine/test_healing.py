"""Token healing: a hole that starts mid-token takes the prefix's last token back (healing.py)."""

import pytest

from infill_engine.engine import Engine
from infill_engine.healing import TokenTexts, heal_text
from infill_engine.request import InfillRequest, SamplerSettings


@pytest.fixture(scope="module")
def tiny():
    return Engine.tiny_random()


@pytest.fixture(scope="module")
def bundled():
    engine = Engine.load(None)
    if engine.is_random:
        pytest.fail("the bundled weights are missing: infill_engine/weights/model.safetensors")
    return engine


def heal_of(engine, prefix):
    be = engine.backend
    return heal_text(prefix, be.encode(prefix), be.decode, be.banned_ids)


@pytest.mark.parametrize("prefix,heals", [
    ("log = logging.getLogger(__n", True),  # inside a word
    ("    return ", True),  # a lone space: the model writes " x", never "x"
    ("x = foo(", True),
    ("def f():\n", False),  # a line start is where training cut holes
    ("def f():\n    ", False),  # indentation only
    ("", False),
])
def test_heals_only_in_the_middle_of_a_line(tiny, prefix, heals):
    heal = heal_of(tiny, prefix)
    assert bool(heal) == heals
    if heals:
        assert prefix.endswith(heal) and heal == tiny.backend.decode(tiny.backend.encode(prefix)[-1:])


def test_a_control_token_or_a_split_character_is_never_taken_back(tiny):
    be = tiny.backend
    assert heal_text("x = ", [be.mask_id], be.decode, be.banned_ids) == ""
    # the last token decodes to text the prefix does not end with (half of a multi-byte character)
    assert heal_text("x = é", be.encode("x = ") + be.encode("é")[:1], be.decode, be.banned_ids) == ""


def test_a_decoder_that_drops_a_leading_space_alone_never_heals():
    """Sentencepiece-style tokens (`▁x`) decode without their space when alone: taking one back
    would lose the space, so such a prefix stays whole."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer, tok.decoder = pre_tokenizers.Metaspace(), decoders.Metaspace()
    tok.train_from_iterator(["x = compute total value"] * 20, trainers.BpeTrainer(special_tokens=["<unk>"]))
    decode = lambda ids: tok.decode(ids)  # noqa: E731
    prefix = "x = compute"
    ids = tok.encode(prefix).ids
    assert decode(ids[-1:]) == "compute" and decode(ids) == prefix  # the space went with the token
    assert heal_text(prefix, ids, decode, []) == ""


def test_tokens_starting_with_a_text_are_listed_once_per_text(tiny):
    be = tiny.backend
    texts = TokenTexts(be.decode, be.vocab_size)
    ids = texts.starting_with("re")
    assert ids and all(be.decode([i]).startswith("re") for i in ids)
    assert be.encode("re")[0] in ids or len(be.encode("re")) > 1
    assert texts.starting_with("re") is ids  # cached


@pytest.mark.parametrize("kwargs", [
    dict(max_length=8, lengths=(2, 3, 5)),  # length rows
    dict(max_length=8, lengths=()),  # the model settles the length
    dict(max_length=8, candidates=3, lengths=(), sampler=SamplerSettings(temperature=1.0, seed=2)),
])
def test_a_healed_hole_starts_with_the_taken_back_text_and_returns_only_the_rest(tiny, kwargs):
    """Random weights would put any token first; the first slot's ban leaves only tokens that
    start with what the prefix gave back, and every candidate comes back without it."""
    prefix = "result = compute_tot"
    req = InfillRequest(prefix, "\n", **kwargs)
    layout, lengths, _ = tiny.plan(req)
    heal = heal_of(tiny, prefix)
    assert layout.heal == heal and heal
    assert lengths == kwargs["lengths"]  # the taken-back token counts as one of the slots
    loop = tiny._denoise(layout, req, lengths)
    first = set(loop.x[:, 0].tolist())
    assert first <= set(layout.first_ids)
    texts = [tiny.backend.decode([t]) for t in first]
    assert all(t.startswith(heal) for t in texts)
    rows = [tiny.backend.decode([t for t in row.tolist() if t != tiny.backend.pad_id]) for row in loop.x]
    assert sorted(c.text for c in loop.result(0.0).candidates) == sorted(r[len(heal):] for r in rows)
    # without healing, the random model's first tokens are other tokens (the ban did the work)
    unhealed = InfillRequest(prefix, "\n", heal=False, **kwargs)
    plain_layout, plain_lengths, _ = tiny.plan(unhealed)
    plain = tiny._denoise(plain_layout, unhealed, plain_lengths)
    assert not set(plain.x[:, 0].tolist()) <= set(layout.first_ids)


@pytest.mark.parametrize("kwargs", [
    dict(length=4), dict(length=3, between=(")\n    return ",)), dict(heal=False),
    dict(sampler=SamplerSettings(strategy="dream")), dict(sampler=SamplerSettings(strategy="llada")),
])
def test_fixed_lengths_tied_holes_presets_and_heal_off_keep_the_prefix_whole(tiny, kwargs):
    """A fixed length counts tokens as given; the upstream presets lay out input as upstream does."""
    layout, _, _ = tiny.plan(InfillRequest("x = foo(ba", "\n", **kwargs))
    assert layout.heal == "" and layout.first_ids == ()


def test_the_bundled_model_finishes_the_word_the_cursor_is_in(bundled):
    """What an editor shows mid-word: `getLogger(__n` gets `ame__)`, not a new token after `n`."""
    r = bundled.infill(InfillRequest("import logging\n\nlog = logging.getLogger(__n", ")\n", max_length=16,
                                     sampler=SamplerSettings(max_steps=8)))
    assert r.candidates[0].text.startswith("ame__")


def test_the_bundled_model_writes_no_second_space_after_a_typed_one(bundled):
    """After `return ` (the space typed) the model used to start with ` x`: two spaces."""
    r = bundled.infill(InfillRequest("def area(width, height):\n    return ", "\n", max_length=16,
                                     sampler=SamplerSettings(max_steps=8)))
    assert r.candidates and not any(c.text.startswith(" ") for c in r.candidates)
    unhealed = bundled.infill(InfillRequest("def area(width, height):\n    return ", "\n", max_length=16,
                                            sampler=SamplerSettings(max_steps=8), heal=False))
    assert any(c.text.startswith(" ") for c in unhealed.candidates)  # the failure healing removes


def test_a_checkpoint_heals_too(tmp_path):
    """A Dream-format checkpoint (a byte-level vocabulary padded past the tokenizer's ids): the
    first slot holds a token that begins with the taken-back text, and the candidates do not."""
    from .test_hf_backends import write_dream

    write_dream(tmp_path / "Dream-Coder-v0-7B")
    engine = Engine.load(str(tmp_path / "Dream-Coder-v0-7B"))
    prefix = "value = compute_tot"
    req = InfillRequest(prefix, "\n", max_length=6, lengths=(2, 4), sampler=SamplerSettings(strategy="confidence"))
    layout, lengths, _ = engine.plan(req)
    assert layout.heal and prefix.endswith(layout.heal) and lengths == (2, 4)
    loop = engine._denoise(layout, req, lengths)
    assert set(loop.x[:, 0].tolist()) <= set(layout.first_ids)
    assert all(engine.backend.decode([i]).startswith(layout.heal) for i in layout.first_ids)
    assert len(engine.infill(req).candidates) == 2
