"""`diffill train`: train diffill's bundled masked-diffusion model from token shards.

The same script runs on a laptop CPU and on a GPU: bf16 autocast where the hardware has it
(`--dtype`), `--compile` for torch.compile (on by default on a CPU), data prepared by `--workers`
processes.  Every
example is dense (see windows.py): most positions are hole slots, and a batch is laid out
[context | hole] so attention runs mask-free.

Runs add up: `--init-from DIR` starts from an exported model (the shipped one, or the last
run's export), with a fresh optimizer and a short warmup.  A run is resumable:
checkpoints (model + optimizer, safetensors only) are written every `--save-every` steps and
a rerun with the same `--out` continues from the last one.  `--minutes` sets a wall-clock
budget the learning-rate schedule follows, so a slow or shared machine still ends decayed.
`--export DIR` writes the shipped form (bf16 weights + tokenizer + config + training.json).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from ..model import ModelConfig, Transformer
from ..precision import resolve_dtype
from ..tokenizer import CodeTokenizer
from .shards import TokenStream
from .windows import DenseBatch, WindowSampler


@dataclass(frozen=True)
class Preset:
    dim: int
    layers: int
    heads: int
    seq_len: int
    batch: int
    lr: float


# Shapes picked by measurement (MODEL_CARD.md, "Choosing the shape"); flags override any field.
PRESETS = {
    "tiny": Preset(dim=32, layers=1, heads=2, seq_len=64, batch=8, lr=3e-3),  # tests
    "small": Preset(dim=256, layers=6, heads=4, seq_len=384, batch=16, lr=2e-3),  # the CPU default
    "gpu-small": Preset(dim=256, layers=6, heads=4, seq_len=512, batch=256, lr=3e-3),
    "gpu-big": Preset(dim=384, layers=8, heads=6, seq_len=512, batch=192, lr=2e-3),
}


def dense_loss(model: Transformer, batch: DenseBatch, slot_loss_fn=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(loss, per-slot cross-entropy at the masked slots).  Only the masked slots' hidden states
    are projected onto the vocabulary.  Each example's loss is its mean over its masked slots:
    the 1/t ELBO weight with t estimated by the realised masking rate, which keeps a nearly
    unmasked example from dominating a small batch.  `slot_loss_fn`: a compiled `slot_loss`."""
    # The masked slots as index lists, found here: a compiled graph then sees only their count
    # as a (dynamic) size, not a data-dependent boolean gather it would have to break at.
    rows, cols = batch.masked.nonzero(as_tuple=True)
    # The mean over each example's slots, then over the batch, as one weighted sum.
    weight = (1.0 / (batch.masked.sum(1).clamp(min=1) * batch.ids.shape[0]))[rows]
    return (slot_loss_fn or slot_loss)(model, batch.ids, batch.positions, batch.n_context, rows, cols,
                                       batch.targets[rows, cols], weight)


def slot_loss(model: Transformer, ids: torch.Tensor, positions: torch.Tensor, n_context: int, rows: torch.Tensor,
              cols: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The whole forward of a training step, one function so torch.compile fuses the trunk, the
    output layer and the cross-entropy: (weighted loss, cross-entropy of each slot [rows, cols])."""
    h = model.hidden_split(ids, positions, n_context)
    ce = F.cross_entropy(model.logits(h[rows, cols]).float(), targets, reduction="none")
    return (ce * weight).sum(), ce


@torch.no_grad()
def validation_loss(model: Transformer, batches: list[DenseBatch], pad_id: int, autocast) -> dict:
    """Cross-entropy per masked slot on fixed validation batches, all slots and text slots only."""
    model.eval()
    total = count = text_total = text_count = 0.0
    for b in batches:
        with autocast:
            _, ce = dense_loss(model, b)
        text = b.targets[b.masked] != pad_id
        total, count = total + float(ce.sum()), count + ce.numel()
        text_total, text_count = text_total + float(ce[text].sum()), text_count + int(text.sum())
    model.train()
    return {"val": round(total / max(count, 1), 4), "val_text": round(text_total / max(text_count, 1), 4)}


def lr_at(step: int, progress: float, lr: float, warmup: int) -> float:
    """Linear warmup, then cosine decay to 10% over `progress` in [0, 1] (steps or wall time)."""
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


# ------------------------------------------------------------------------------- checkpoints


def save_checkpoint(out: Path, model: Transformer, opt: torch.optim.Optimizer, state: dict) -> None:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "ckpt_model.safetensors"))
    names = {id(p): n for n, p in model.named_parameters()}
    opt_state = {}
    for group in opt.param_groups:
        for p in group["params"]:
            for key, val in opt.state.get(p, {}).items():
                opt_state[f"{names[id(p)]}::{key}"] = val.reshape(-1) if val.dim() == 0 else val.contiguous()
    save_file(opt_state, str(out / "ckpt_optim.safetensors"))
    (out / "ckpt.json").write_text(json.dumps(state))


def load_checkpoint(out: Path, model: Transformer, opt: torch.optim.Optimizer) -> dict:
    model.load_state_dict(load_file(str(out / "ckpt_model.safetensors")))
    params = dict(model.named_parameters())
    for key, val in load_file(str(out / "ckpt_optim.safetensors")).items():
        name, field = key.split("::")
        opt.state[params[name]][field] = val.reshape(()) if field == "step" else val
    return json.loads((out / "ckpt.json").read_text())


def plot_history(history: list, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plotting is optional (extra "train")
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    tokens = [h["tokens"] / 1e6 for h in history]
    ax.plot(tokens, [h["loss"] for h in history], label="train", alpha=0.5)
    val = [h for h in history if "val" in h]
    ax.plot([h["tokens"] / 1e6 for h in val], [h["val_text"] for h in val], "o-", label="validation CE / text slot")
    ax.set_xlabel("million token positions")
    ax.set_ylabel("cross-entropy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def export(model: Transformer, tok: CodeTokenizer, directory: Path, meta: dict,
           max_file_bytes: int | None = None) -> None:
    model.save(directory, max_file_bytes=max_file_bytes)  # bf16 safetensors + config.json
    tok.save(directory / "tokenizer.json")
    (directory / "training.json").write_text(json.dumps(meta, indent=1) + "\n")


# ------------------------------------------------------------------------------- data


class _Batches(torch.utils.data.IterableDataset):
    """Endless batches from the train stream; each loader worker samples with its own seed."""

    def __init__(self, shards: Path, seq_len: int, batch: int, seed: int, max_tokens: int | None):
        self.shards, self.seq_len, self.batch, self.seed, self.max_tokens = shards, seq_len, batch, seed, max_tokens

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        worker = info.id if info else 0
        tok = CodeTokenizer.load(self.shards / "tokenizer.json")
        tokens = TokenStream(self.shards, "train").tokens[: self.max_tokens]
        sampler = WindowSampler(tokens, tok, self.seq_len, seed=self.seed * 1000 + worker)
        while True:
            yield sampler.batch(self.batch)


def batches(shards: Path, seq_len: int, batch: int, seed: int, workers: int, pin: bool,
            max_tokens: int | None = None):
    data = _Batches(shards, seq_len, batch, seed, max_tokens)
    loader = torch.utils.data.DataLoader(data, batch_size=None, num_workers=workers, pin_memory=pin,
                                         collate_fn=lambda b: b,
                                         prefetch_factor=4 if workers else None, persistent_workers=workers > 0)
    return iter(loader)


def validation_batches(shards: Path, tok: CodeTokenizer, seq_len: int, batch: int, n: int = 4) -> list[DenseBatch]:
    """Fixed held-out batches (seeded; the same for every run with this tokenizer and seq_len)."""
    sampler = WindowSampler(TokenStream(shards, "valid").tokens, tok, seq_len, seed=1234, plain_fraction=0.25)
    return [sampler.batch(batch) for _ in range(n)]


# ------------------------------------------------------------------------------- the run


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="diffill train", description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=Path, default=Path("data/shards"), help="made by `diffill shards`")
    ap.add_argument("--out", type=Path, default=Path("runs/small"))
    ap.add_argument("--preset", choices=sorted(PRESETS), default="small")
    for name in ("dim", "layers", "heads", "seq_len", "batch"):
        ap.add_argument("--" + name.replace("_", "-"), type=int, default=None, help="overrides the preset")
    ap.add_argument("--lr", type=float, default=None, help="peak learning rate (overrides the preset)")
    ap.add_argument("--steps", type=int, default=1_000_000, help="stop after this many steps in all")
    ap.add_argument("--minutes", type=float, default=None,
                    help="train for this much wall time in all (resumes count); the schedule follows the clock")
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--save-every", type=int, default=100)
    ap.add_argument("--val-every", type=int, default=200)
    ap.add_argument("--init-from", type=Path, default=None,
                    help="warm-start from this exported model (fresh optimizer; shapes come from it)")
    ap.add_argument("--max-train-mib", type=float, default=None, help="use only the stream's first N MiB")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", choices=("fp32", "bf16"), default=None,
                    help="autocast precision (default: bf16 on a GPU or a CPU with native bf16, else fp32)")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                    help="torch.compile the forward and loss (default: on for a CPU; falls back to eager)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--workers", type=int, default=0, help="data loader processes (0: in the training loop)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--export", type=Path, default=None, help="write the shippable model here when done")
    ap.add_argument("--max-file-mib", type=float, default=None, help="split exported weights into files this big")
    return ap


def model_config(args, vocab: int) -> ModelConfig:
    preset = PRESETS[args.preset]
    pick = {k: getattr(args, k) if getattr(args, k) is not None else getattr(preset, k)
            for k in ("dim", "layers", "heads", "seq_len")}
    # max_seq_len is the trained window: the engine cuts context to it, so inference never shows
    # the model a position it has not learned (and a shorter window is a faster prefill).
    return ModelConfig(vocab_size=vocab, dim=pick["dim"], n_layers=pick["layers"], n_heads=pick["heads"],
                       ffn_hidden=64 * round(8 * pick["dim"] / 3 / 64), max_seq_len=pick["seq_len"])


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    preset = PRESETS[args.preset]
    seq_len = args.seq_len or preset.seq_len
    batch_size = args.batch or preset.batch
    peak_lr = args.lr or preset.lr
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    tok = CodeTokenizer.load(args.shards / "tokenizer.json")

    if args.init_from is not None:
        model = Transformer.load(args.init_from).train()
        init_tok = (args.init_from / "tokenizer.json").read_text()
        if init_tok != (args.shards / "tokenizer.json").read_text():
            raise SystemExit(f"--init-from {args.init_from} was trained with another tokenizer than {args.shards}")
    else:
        model = Transformer(model_config(args, tok.vocab_size))
    model.to(args.device)
    cfg = model.cfg
    # fused: one kernel over all parameters.  On a CPU torch's default loops over them one by
    # one: 0.3-0.7 s a step at d256x6 on the shared 2-core box, against 0.04 s fused.
    opt = torch.optim.AdamW(model.parameters(), lr=peak_lr, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    state = {"step": 0, "history": [], "seconds": 0.0, "tokens": 0, "supervised": 0}
    if (args.out / "ckpt.json").exists():
        state = load_checkpoint(args.out, model, opt)
        print(f"resumed from step {state['step']}")
    print(f"model: {model.num_params() / 1e6:.2f}M parameters, {asdict(cfg)}"
          + (f", warm start from {args.init_from}" if args.init_from else ""), flush=True)

    on_cuda = args.device.startswith("cuda")
    dtype = args.dtype or ("bf16" if resolve_dtype("auto", args.device) == torch.bfloat16 else "fp32")
    autocast = (torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16) if dtype == "bf16"
                else nullcontext())
    if on_cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
    slot_loss_fn = None
    if args.compile if args.compile is not None else not on_cuda:
        # Forward and loss as one graph (backward follows through AOTAutograd): inductor fuses the
        # norms, RoPE, SwiGLU and cross-entropy that eager runs as separate passes over memory
        # (`diffill bench --train --compile`).  dynamic: the context/hole split and the count of
        # masked slots change per batch; one graph for plain batches and one for hole batches.
        slot_loss_fn = torch.compile(slot_loss, dynamic=True)
    max_tokens = int(args.max_train_mib * (1 << 20) / 2) if args.max_train_mib else None
    train_iter = batches(args.shards, seq_len, batch_size, args.seed + state["step"], args.workers, on_cuda,
                         max_tokens)
    val = [b.to(args.device) for b in validation_batches(args.shards, tok, seq_len, min(batch_size, 32))]

    t0 = time.time()
    elapsed = lambda: state["seconds"] + time.time() - t0  # noqa: E731
    progress = lambda: elapsed() / (args.minutes * 60) if args.minutes else state["step"] / args.steps  # noqa: E731
    log_every = 10
    window_t, window_tokens = time.time(), 0
    while state["step"] < args.steps and progress() < 1.0:
        batch = next(train_iter).to(args.device)
        lr = lr_at(state["step"], progress(), peak_lr, args.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        try:
            with autocast:
                loss, _ = dense_loss(model, batch, slot_loss_fn)
            loss.backward()
        except Exception as exc:  # noqa: BLE001 — a compiler failure must not cost the run
            if slot_loss_fn is None:
                raise
            print(f"torch.compile failed ({type(exc).__name__}: {exc}); continuing eager", flush=True)
            slot_loss_fn = None
            opt.zero_grad(set_to_none=True)
            continue
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        state["step"] += 1
        n_tok = batch.ids.numel()
        state["tokens"] += n_tok
        state["supervised"] += int((batch.masked & (batch.targets != tok.pad_id)).sum())
        window_tokens += n_tok
        step = state["step"]
        done = step >= args.steps or progress() >= 1.0
        if step % log_every == 0 or done or step % args.val_every == 0:
            rate = window_tokens / max(time.time() - window_t, 1e-9)
            window_t, window_tokens = time.time(), 0
            record = {"step": step, "loss": round(loss.item(), 4), "tokens": state["tokens"],
                      "supervised": state["supervised"], "lr": round(lr, 6), "seconds": round(elapsed(), 1),
                      "tokens_per_s": round(rate)}
            if step % args.val_every == 0 or done:
                record.update(validation_loss(model, val, tok.pad_id, autocast))
                print(json.dumps(record), flush=True)
            state["history"].append(record)
        if step % args.save_every == 0 or done:
            state["seconds"] = elapsed()
            t0 = time.time()
            save_checkpoint(args.out, model, opt, state)
            plot_history(state["history"], args.out / "loss.png")
    if args.export:
        meta = {"steps": state["step"], "tokens_seen": state["tokens"], "supervised_tokens": state["supervised"],
                "seq_len": seq_len, "batch": batch_size, "device": args.device, "dtype": dtype,
                "threads": torch.get_num_threads(), "wall_seconds": round(elapsed()),
                "init_from": str(args.init_from) if args.init_from else None,
                "final": state["history"][-1] if state["history"] else None}
        max_bytes = int(args.max_file_mib * (1 << 20)) if args.max_file_mib else None
        export(model.float().cpu(), tok, args.export, meta, max_bytes)
        print(f"exported to {args.export}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
