"""Upstream sampling presets on tiny random checkpoints: Dream's diffusion_generate and
LLaDA's generate, step by step.

Each test pins how many slots every step commits (the schedule is the point of a
preset) and compares the tokens with a reference loop written here from the published
algorithm over the plain-torch reference forward of test_hf_backends."""

from __future__ import annotations

import json

import pytest
import torch

from infill_engine import sampler
from infill_engine.backends.checkpoint import load_hf_backend
from infill_engine.engine import Engine
from infill_engine.request import InfillError, InfillRequest, SamplerSettings

from .test_hf_backends import dream_expected, llada_expected, write_dream, write_llada

PREFIX, SUFFIX = "def add(a, b):\n    return ", "\n\nprint(add(1, 2))\n"


def run(engine: Engine, n: int, settings: SamplerSettings):
    """(result, slots committed at each step)."""
    open_slots = [n]

    def on_step(step: int, texts: list[str]) -> None:
        open_slots.append(texts[0].count("\u2591"))

    result = engine.infill(InfillRequest(PREFIX, SUFFIX, length=n, sampler=settings, on_step=on_step))
    return result, [a - b for a, b in zip(open_slots, open_slots[1:])]


def hole_logp(backend, logits_of, before, x, after) -> torch.Tensor:
    """Reference log-probabilities at the hole, with diffill's bans (fixed length: no pad)."""
    n = len(x)
    logits = logits_of(torch.tensor(before + x + after))[len(before) : len(before) + n].clone()
    logits[:, [*backend.banned_ids, backend.pad_id]] = float("-inf")
    return logits.log_softmax(-1)


@pytest.fixture(scope="module")
def dream(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ck") / "Dream-Coder-v0-7B"
    ck = write_dream(directory)
    return ck, Engine.load(str(directory))


@pytest.fixture(scope="module")
def llada(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ck") / "LLaDA-8B-Instruct"
    ck = write_llada(directory)
    return ck, Engine.load(str(directory))


# ------------------------------------------------------------------------------ Dream


def dream_reference(backend, ck, n: int, schedule: list[int], alg: str) -> list[int]:
    """Dream's _sample at temperature 0: confidence by alg, the `schedule[i]` most confident
    masked slots committed at step i."""
    before, after = backend.encode(PREFIX), backend.encode(SUFFIX)
    x = [backend.mask_id] * n
    for count in schedule:
        logp = hole_logp(backend, lambda s: dream_expected(ck, s), before, x, after)
        probs = logp.exp()
        conf, token = probs.max(-1)
        if alg == "entropy":
            conf = (probs * (probs + 1e-10).log()).sum(-1)
        elif alg == "topk_margin":
            top = probs.topk(2, -1).values
            conf = top[:, 0] - top[:, 1]
        open_slots = [i for i in range(n) if x[i] == backend.mask_id]
        for i in sorted(open_slots, key=lambda i: -conf[i])[:count]:
            x[i] = int(token[i])
    return x


@pytest.mark.parametrize("alg", ["maskgit_plus", "entropy", "topk_margin"])
def test_dream_preset_follows_diffusion_generate(dream, alg):
    ck, engine = dream
    result, schedule = run(engine, 8, SamplerSettings(strategy="dream", alg=alg))
    # steps = masks = 8, eps 1e-3: int(m (1 - s/t)) is 0 at the first step, the rest at the last.
    assert schedule == [0, 1, 1, 1, 1, 1, 1, 2]
    assert result.forwards == 8
    want = dream_reference(engine.backend, ck, 8, schedule, alg)
    assert result.text == engine.backend.decode(want)


def test_dream_preset_steps_and_eps(dream):
    _, engine = dream
    # t = linspace(1, 1e-3, 5) = 1, .75025, .5005, .25075, .001:  8·.24975 → 1, 7·.3329 → 2,
    # 5·.499 → 2, the last step the remaining 3.
    assert run(engine, 8, SamplerSettings(strategy="dream", steps=4))[1] == [1, 2, 2, 3]
    # A larger eps commits more at the first step: t = 1, .7, .4, .1 (eps .1, 3 steps).
    assert run(engine, 6, SamplerSettings(strategy="dream", steps=3, eps=0.1))[1] == [1, 2, 3]


def test_dream_origin_and_alg_temp_sample_but_finish_in_steps(dream):
    _, engine = dream
    for settings in (SamplerSettings(strategy="dream", alg="origin", steps=5, seed=3),
                     SamplerSettings(strategy="dream", alg_temp=0.5, temperature=0.7, top_p=0.9, top_k=20, seed=3)):
        result, schedule = run(engine, 8, settings)
        # origin may commit everything early; upstream then spends its remaining steps on a
        # finished canvas, diffill stops
        assert sum(schedule) == 8 and len(schedule) == result.forwards <= (settings.steps or 8)
        again, _ = run(engine, 8, settings)
        assert again.text == result.text  # the seed makes the draws repeatable
    # origin commits each slot with probability 1 - s/t: a random count, not int(m (1 - s/t)).
    counts = {tuple(run(engine, 8, SamplerSettings(strategy="dream", alg="origin", steps=4, seed=s))[1])
              for s in range(6)}
    assert len(counts) > 1


def test_top_p_and_top_k_filters():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]]).log_softmax(-1)
    kept = lambda out: (out > torch.finfo(out.dtype).min).tolist()[0]  # noqa: E731
    assert kept(sampler.filter_logits(logits, None, 2)) == [True, True, False, False]
    # probabilities .64 .24 .09 .03: top_p .7 keeps the token that crosses it
    assert kept(sampler.filter_logits(logits, 0.7, None)) == [True, True, False, False]
    assert kept(sampler.filter_logits(logits, 0.5, None)) == [True, False, False, False]
    assert kept(sampler.filter_logits(logits, 1.0, None)) == [True] * 4


def test_generation_config_picks_the_preset_defaults(tmp_path):
    directory = tmp_path / "DreamOn-v0-7B"
    write_dream(directory)
    (directory / "generation_config.json").write_text(json.dumps(
        {"alg": "topk_margin", "eps": 0.1, "steps": 512, "temperature": 0.2, "top_p": 0.95, "bos_token_id": 1}))
    backend = load_hf_backend(str(directory))
    resolved = SamplerSettings(strategy="dream").with_defaults(backend.generation_defaults)
    assert (resolved.alg, resolved.eps, resolved.top_p) == ("topk_margin", 0.1, 0.95)
    # steps is tied to upstream's max_new_tokens, temperature stays the request's
    assert resolved.steps is None and resolved.temperature == 0.0
    assert SamplerSettings(strategy="dream", alg="origin").with_defaults(backend.generation_defaults).alg == "origin"
    assert SamplerSettings(strategy="dream").with_defaults({}).alg == "entropy"
    with pytest.raises(InfillError, match="alg"):
        SamplerSettings(strategy="dream", alg="greedy")
    with pytest.raises(InfillError, match="remasking"):
        SamplerSettings(strategy="llada", remasking="lowest")


# ------------------------------------------------------------------------------ LLaDA


def llada_reference(backend, ck, n: int, steps: int, block_length: int, cfg_scale: float = 0.0) -> list[int]:
    """LLaDA's generate at temperature 0 with low_confidence remasking, over the hole."""
    before, after = backend.encode(PREFIX), backend.encode(SUFFIX)
    x = [backend.mask_id] * n
    blocks = n // block_length
    per_block = steps // blocks
    for block in range(blocks):
        span = range(block * block_length, (block + 1) * block_length)
        masks = sum(x[i] == backend.mask_id for i in span)
        counts = [masks // per_block + (j < masks % per_block) for j in range(per_block)]
        for count in counts:
            def logits_of(seq):
                cond = llada_expected(ck, seq)
                if not cfg_scale:
                    return cond
                blind = seq.clone()
                blind[: len(before)] = backend.mask_id
                blind[len(before) + n :] = backend.mask_id
                un = llada_expected(ck, blind)
                guided = un + (cfg_scale + 1) * (cond - un)
                return guided.nan_to_num(nan=float("-inf"))  # folded end tokens: -inf in both

            logp = hole_logp(backend, logits_of, before, x, after)
            prob, token = logp.exp().max(-1)
            open_slots = [i for i in span if x[i] == backend.mask_id]
            for i in sorted(open_slots, key=lambda i: -prob[i])[:count]:
                x[i] = int(token[i])
    return x


def test_llada_preset_blocks_left_to_right(llada):
    ck, engine = llada
    result, schedule = run(engine, 8, SamplerSettings(strategy="llada", steps=4, block_length=4))
    assert schedule == [2, 2, 2, 2] and result.forwards == 4
    assert result.text == engine.backend.decode(llada_reference(engine.backend, ck, 8, 4, 4))
    # 6 steps over 2 blocks: 3 per block, 4 masks each split 2, 1, 1 (upstream's
    # get_num_transfer_tokens gives the remainder to the first steps).
    texts: list[str] = []
    engine.infill(InfillRequest(PREFIX, SUFFIX, length=8, on_step=lambda s, t: texts.append(t[0]),
                                sampler=SamplerSettings(strategy="llada", steps=6, block_length=4)))
    masks = [t.count("\u2591") for t in texts]
    assert [8 - masks[0]] + [a - b for a, b in zip(masks, masks[1:])] == [2, 1, 1, 2, 1, 1]
    # semi-autoregressive: after the first block's three steps the second block is untouched
    assert texts[2].endswith("\u2591" * 4) and "\u2591" not in texts[2][: -4]


def test_llada_preset_defaults_to_one_block_one_token_per_step(llada):
    ck, engine = llada
    result, schedule = run(engine, 6, SamplerSettings(strategy="llada"))
    assert schedule == [1] * 6
    assert result.text == engine.backend.decode(llada_reference(engine.backend, ck, 6, 6, 6))


def test_llada_cfg_adds_an_unconditional_pass(llada):
    ck, engine = llada
    result, schedule = run(engine, 4, SamplerSettings(strategy="llada", cfg_scale=2.0))
    assert schedule == [1] * 4 and result.forwards == 8  # two passes a step
    assert result.text == engine.backend.decode(llada_reference(engine.backend, ck, 4, 4, 4, cfg_scale=2.0))
    plain, _ = run(engine, 4, SamplerSettings(strategy="llada"))
    assert plain.text != result.text  # guidance changes the answer on this model


def test_llada_random_remasking_keeps_the_schedule(llada):
    _, engine = llada
    settings = SamplerSettings(strategy="llada", steps=4, block_length=4, remasking="random", seed=5)
    result, schedule = run(engine, 8, settings)
    assert schedule == [2, 2, 2, 2]
    orders = set()
    for seed in range(4):
        texts: list[str] = []
        engine.infill(InfillRequest(PREFIX, SUFFIX, length=4, on_step=lambda s, t: texts.append(t[0]),
                                    sampler=SamplerSettings(strategy="llada", remasking="random", seed=seed)))
        orders.add(tuple(texts))
    assert len(orders) > 1  # which slot goes first is random


# ------------------------------------------------------------------------------ CLI


def test_cli_runs_a_preset_on_a_checkpoint(tmp_path):
    import argparse
    import subprocess
    import sys

    from infill_engine import cli
    from tests import REPO

    ap = argparse.ArgumentParser()
    cli.add_sampler_arguments(ap)
    settings = cli.sampler_settings(ap.parse_args(["--strategy", "llada", "--block-length", "4", "--cfg-scale", "1.5"]))
    assert (settings.block_length, settings.cfg_scale, settings.remasking) == (4, 1.5, None)

    write_dream(tmp_path / "Dream-Coder-v0-7B")
    source = tmp_path / "a.py"
    source.write_text(PREFIX + "\n" + SUFFIX)
    r = subprocess.run([sys.executable, "-m", "infill_engine.cli", "fill", str(source), "--at", "2:1",
                        "--model", str(tmp_path / "Dream-Coder-v0-7B"), "--strategy", "dream", "--alg",
                        "topk_margin", "--steps", "3", "--length", "6", "--show-steps", "--cache-block", "2"],
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("--- step") == 3  # six slots in three steps (the cache refreshed every 2 commits)
