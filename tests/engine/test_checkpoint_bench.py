"""`diffill bench --model DIR` on tiny config-only and full checkpoints."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from infill_engine.backends.checkpoint import detect_family, read_config
from infill_engine.pipeline import checkpoint_bench
from tests import REPO

from .test_hf_backends import write_dream

TINY = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "vocab_size": 512, "mask_token_id": 500, "pad_token_id": 501, "eos_token_id": 501}
TINY_LLADA = {"d_model": 64, "n_heads": 4, "n_kv_heads": 4, "n_layers": 2, "mlp_hidden_size": 128,
              "embedding_size": 512, "vocab_size": 512, "mask_token_id": 500, "eos_token_id": 501, "pad_token_id": 501}


def shrunk(tmp_path, shape: str, overrides: dict):
    """A shipped shape's config.json with tiny dimensions: the real keys, a CPU-sized network."""
    config = read_config(checkpoint_bench.SHAPES / shape) | overrides
    directory = tmp_path / shape
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_shipped_shapes_are_the_published_layouts():
    families = {}
    for shape in ("qwen2-0.5b", "qwen2-7b", "llada-8b"):
        config = read_config(checkpoint_bench.SHAPES / shape)
        families[shape] = detect_family(config)
    assert families == {"qwen2-0.5b": "dream", "qwen2-7b": "dream", "llada-8b": "llada"}


@pytest.mark.parametrize("shape,overrides", [("qwen2-0.5b", TINY), ("llada-8b", TINY_LLADA)])
def test_bench_on_a_config_only_checkpoint(tmp_path, shape, overrides):
    directory = shrunk(tmp_path, shape, overrides)
    r = checkpoint_bench.bench(directory, context=24, hole=8, repeats=1)
    assert r["vanilla 1/step"]["forwards"] == 8 and r["vanilla 1/step x8"]["forwards"] == 8
    assert r["cache fixed 4"]["forwards"] == 2 and r["vanilla fixed 4"]["forwards"] == 2
    # blocks of 8 // 4 = 2 slots: the first step's 4 commits make the second step refresh first
    assert r["cache+refresh fixed 4"]["forwards"] == 2 and r["cache+refresh fixed 4"]["refreshes"] == 1
    assert r["cache fixed 4"]["refreshes"] == 0
    assert r["vanilla 1/step x8"]["batch"] == 8
    for name, row in r.items():
        if isinstance(row, dict):
            assert row["ms_per_forward"] > 0 and row["tokens_per_s"] > 0, name


def test_bench_compiled_rows(tmp_path):
    """cudagraphs mode: on a CPU the same capture without graphs (aot_eager), seconds to compile."""
    directory = shrunk(tmp_path, "qwen2-0.5b", TINY)
    r = checkpoint_bench.bench(directory, context=24, hole=8, repeats=1, compile="cudagraphs", compiled_only=True)
    ways = [name for name, row in r.items() if isinstance(row, dict) and "batch" in row]
    assert ways == ["vanilla 1/step", "cache fixed 4", "cache fixed 4 x8", "cache fixed 4 compiled",
                    "cache fixed 4 compiled x8"]
    assert r["cache fixed 4 compiled x8"]["forwards"] == 2 and r["cache fixed 4 compiled x8"]["batch"] == 8
    c = r["compile"]
    assert c["error"] is None and c["compiled_calls"] >= 4 and c["context_calls"] >= 4  # warm-up + a round, x2
    assert c["same_tokens"] == (72, 72)  # 8 slots x (1 + 8) rows, as the eager cache got them
    checkpoint_bench.print_table(r)


def test_bench_cli_prints_the_ratio_table(tmp_path):
    write_dream(tmp_path / "Dream-tiny", shards=1)  # a checkpoint with weights runs its own
    r = subprocess.run([sys.executable, "-m", "infill_engine.cli", "bench", "--model", str(tmp_path / "Dream-tiny"),
                        "--context", "24", "--hole", "8", "--repeats", "1"],
                       capture_output=True, text=True, timeout=300, cwd=REPO)
    assert r.returncode == 0, r.stderr
    for way in ("vanilla 1/step", "cache 1/step", "cache fixed 4", "cache+refresh fixed 4", "threshold 0.9",
                "vanilla 1/step x8"):
        assert way in r.stdout
    assert "1.00x" in r.stdout  # vanilla against itself


def test_gpu_bench_script_runs_on_cpu_with_tiny_shapes(tmp_path):
    import os

    shapes = [shrunk(tmp_path, "qwen2-7b", TINY), shrunk(tmp_path, "llada-8b", TINY_LLADA)]
    env = os.environ | {"SHAPES": " ".join(map(str, shapes)), "DEVICE": "cpu", "CONTEXT": "24", "HOLE": "8",
                        "REPEATS": "1", "PYTHON": sys.executable, "PYTHONPATH": str(REPO),
                        "COMPILE_LARGE": "cudagraphs", "BUDGET": "500", "STEP_TIMEOUT": "240"}
    out = tmp_path / "out"
    r = subprocess.run([str(REPO / "scripts" / "bench-on-gpu.sh"), str(out)], capture_output=True, text=True,
                       timeout=600, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    for shape in ("qwen2-7b", "llada-8b"):
        table = (out / f"{shape}.txt").read_text()
        assert "cache fixed 4 x8" in table and "vs vanilla" in table
        compiled = (out / f"{shape}-compiled.txt").read_text()
        assert "cache fixed 4 compiled x8" in compiled and "compiled steps" in compiled, compiled
    assert (out / "gpu.txt").exists()
