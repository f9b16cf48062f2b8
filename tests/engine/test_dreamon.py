"""DreamOn's variable-length infilling on tiny checkpoints whose weights make expand and
delete fire.

The checkpoints here have their attention and MLP outputs zeroed, so the residual stream
is the token embedding and (Dream shifts logits) a slot's prediction depends only on the
token before it.  Embeddings of the few tokens that matter are unit vectors on their own
axes, so each rule "after token X, predict Y with logit c" is one head entry; every other
token's logit is exactly 0 there.  Logits 12 / 10 / 8 / 6 give probabilities about
.998 / .987 / .909 / .57 against the ~300 zero-logit tokens, so the commit order is known."""

from __future__ import annotations

import math

import pytest
import torch

from infill_engine.engine import Engine
from infill_engine.request import InfillRequest, SamplerSettings

from .test_hf_backends import HIDDEN, write_dream

PREFIX, SUFFIX = "x = f(", ")\n"


def rules_checkpoint(directory, rules: list[tuple[str, str, float]], delete_token: bool = True) -> Engine:
    """rules: (before, predicted, logit); names are 'prefix' (the prefix's last token),
    'mask', an expand/delete token or plain text of one token.  Without delete_token the
    checkpoint is laid out as DreamOn's release: a <|beginoftext|> bos, and no <|delete|>
    (an <|endoftext|> committed inside the hole deletes its slot)."""

    def adjust(w: dict, tok) -> None:
        ids = {"mask": tok.token_to_id("<|mask|>"), "expand": tok.token_to_id("<|expand|>"),
               "delete": tok.token_to_id("<|delete|>" if delete_token else "<|endoftext|>"),
               "prefix": tok.encode(PREFIX).ids[-1]}
        for text in ("a", "b"):
            ids[text] = tok.encode(text).ids[0]
        for layer in w["layers"]:  # no attention, no MLP: the residual is the embedding
            layer["o"].zero_()
            layer["down"].zero_()
        w["norm"] = torch.ones(HIDDEN)
        axes = {name: axis for axis, name in enumerate(("prefix", "mask", "a", "b"))}
        w["embed"][:, : len(axes)] = 0
        w["head"][:, : len(axes)] = 0
        for name, axis in axes.items():
            w["embed"][ids[name]] = 0
            w["embed"][ids[name], axis] = 1.0
        for before, predicted, logit in rules:
            # RMSNorm of a unit vector on an axis is sqrt(HIDDEN) on that axis
            w["head"][ids[predicted], axes[before]] = logit / math.sqrt(HIDDEN)

    write_dream(directory, expand=True, delete=delete_token, bos=not delete_token, adjust=adjust)
    return Engine.load(str(directory))


def run(engine: Engine, settings: SamplerSettings, **fields):
    masks: list[int] = []
    # heal=False: the rules key on the prefix's last token, which healing would take into the hole
    fields.setdefault("heal", False)
    result = engine.infill(InfillRequest(PREFIX, SUFFIX, sampler=settings,
                                         on_step=lambda s, t: masks.append(t[0].count("\u2591")), **fields))
    return result, masks


STRATEGIES = [SamplerSettings(strategy="confidence"), SamplerSettings(strategy="dream", alg="maskgit_plus")]


@pytest.mark.parametrize("settings", STRATEGIES, ids=["confidence", "dream"])
def test_expand_grows_the_hole_up_to_max_length(tmp_path, settings):
    engine = rules_checkpoint(tmp_path / "DreamOn-v0-7B", [
        ("prefix", "expand", 12), ("prefix", "a", 10), ("mask", "a", 6), ("a", "a", 8)])
    result, masks = run(engine, settings, max_length=6)
    # 4 masks; the first slot says expand twice (4 -> 5 -> 6 masks), then max_length bans
    # expand and the six slots fill one a step.
    assert masks == [5, 6, 5, 4, 3, 2, 1, 0]
    assert result.text == "a" * 6 and result.hole_tokens == 6 and result.forwards == 8


@pytest.mark.parametrize("delete_token", [True, False], ids=["<|delete|>", "eos"])
@pytest.mark.parametrize("settings", STRATEGIES, ids=["confidence", "dream"])
def test_delete_shrinks_the_hole(tmp_path, settings, delete_token):
    engine = rules_checkpoint(tmp_path / "DreamOn-v0-7B", [
        ("prefix", "a", 12), ("a", "b", 10), ("b", "delete", 8), ("mask", "delete", 6)], delete_token)
    result, masks = run(engine, settings, max_length=16)
    # a, then b, then the two slots after b are deleted one by one.
    assert masks == [3, 2, 1, 0]
    assert result.text == "ab" and result.hole_tokens == 2 and result.forwards == 4


def test_fixed_length_and_candidates_with_edits(tmp_path):
    engine = rules_checkpoint(tmp_path / "DreamOn-v0-7B", [
        ("prefix", "expand", 12), ("prefix", "a", 10), ("mask", "delete", 6), ("a", "a", 8)])
    greedy = SamplerSettings(strategy="confidence")
    # A fixed length is a fixed canvas: expand and delete stay banned.
    fixed = engine.infill(InfillRequest(PREFIX, SUFFIX, length=3, sampler=greedy))
    assert fixed.text == "aaa" and fixed.hole_tokens == 3
    # Several candidates each change length their own way (one row each).
    result = engine.infill(InfillRequest(PREFIX, SUFFIX, max_length=8, candidates=3, sampler=greedy, heal=False))
    assert len(result.candidates) == 3
    # the greedy one grows to max_length (expand beats the .57 delete after a mask)
    assert "a" * 8 in [c.text for c in result.candidates]


def test_edits_stay_within_the_cap():
    from infill_engine.denoise import edit_length as _edit_length, resize_holes as _resize_holes

    E, D, M = 90, 91, 99
    x = torch.tensor([[E, 5, E, D, E]])
    out, conf, masked = _edit_length(x, torch.ones(1, 5), M, E, D, cap=6)
    # one slot of room: the first expand grows, the others reopen as one mask each
    assert out.tolist() == [[M, M, 5, M, M]] and masked.sum() == 4 and conf[0, 2] == 1
    # tied holes all take the new size; the text between them stays
    ids = torch.tensor([1, M, M, 2, M, M, 3])
    hole = ids == M
    new_ids, new_hole = _resize_holes(ids, hole, 3, M)
    assert new_ids.tolist() == [1, M, M, M, 2, M, M, M, 3] and new_hole.sum() == 6


def test_dreamon_input_is_laid_out_as_upstream(tmp_path):
    """DreamOn's infilling code feeds bos + prefix + masks + suffix + eos (the tokenizer's
    bos and eos); diffill lays a DreamOn checkpoint's input out the same, keeps the two when
    it cuts the context to the window, and leaves other Dream checkpoints as they were."""
    from .test_hf_backends import write_dream

    ids = write_dream(tmp_path / "DreamOn-v0-7B", expand=True, bos=True)["ids"]
    engine = Engine.load(str(tmp_path / "DreamOn-v0-7B"))
    be = engine.backend
    bos, eos, mask = ids["<|beginoftext|>"], ids["<|endoftext|>"], ids["<|mask|>"]
    prefix, suffix = be.encode(PREFIX), be.encode(SUFFIX)
    assert be.delete_id == eos and be.expand_id == ids["<|expand|>"]  # upstream deletes an eos slot
    layout, _, edits = engine.plan(InfillRequest(PREFIX, SUFFIX, max_length=8, heal=False))  # upstream never heals
    assert edits and layout.ids.tolist() == [bos, *prefix, *[mask] * 4, *suffix, eos]
    assert layout.hole.tolist() == [False] * (1 + len(prefix)) + [True] * 4 + [False] * (len(suffix) + 1)
    fixed, _, edits = engine.plan(InfillRequest(PREFIX, SUFFIX, length=3))  # upstream's fixed-length infilling too
    assert not edits and fixed.ids.tolist() == [bos, *prefix, *[mask] * 3, *suffix, eos]
    be.max_len = 8  # a window that cuts the context: the frame stays, the nearest context too
    long_prefix = "y = 2\n" + PREFIX
    cut, _, _ = engine.plan(InfillRequest(long_prefix, SUFFIX, length=3, max_length=3))
    # 8 = bos + 3 context tokens (the prefix's last, as it has priority) + 3 masks + eos
    assert cut.ids.tolist() == [bos, *be.encode(long_prefix)[-3:], *[mask] * 3, eos] and cut.context_cut > 0

    write_dream(tmp_path / "Dream-Coder-v0-7B", bos=True)  # no <|expand|>: not DreamOn, no frame
    plain = Engine.load(str(tmp_path / "Dream-Coder-v0-7B"))
    layout, _, _ = plain.plan(InfillRequest(PREFIX, SUFFIX, length=3))
    assert layout.ids.tolist() == [*prefix, *[mask] * 3, *suffix]
