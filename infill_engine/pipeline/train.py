"""`diffill train`: train diffill's bundled masked-diffusion model.

The same script runs on a laptop CPU (fp32) and on a GPU (bf16 autocast).  Checkpoints
(model + optimizer state, safetensors only) are written every `--save-every` steps and a
rerun with the same `--out` resumes from the last one.  `--export DIR` writes the shipped
form (bf16 weights + tokenizer + config) at the end.

Loss (MDLM / LLaDA): t ~ U(0,1], each hole slot masked with probability t, cross-entropy
on masked slots weighted by 1/t, normalised by the number of hole slots (see diffusion_loss
for how t is estimated).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from .corpus import read_texts
from ..model import ModelConfig, Transformer
from ..tokenizer import CodeTokenizer
from .training_data import Batch, ExampleSampler


def masked_cross_entropy(model: Transformer, batch: Batch) -> torch.Tensor:
    """Cross-entropy at the masked slots only, [B, L] (zeros elsewhere).  Projecting just those
    hidden states onto the vocabulary saves most of the output layer's cost."""
    h = model.hidden(batch.ids, batch.hole)
    logits = model.logits(h[batch.masked])
    ce = torch.zeros(batch.ids.shape, device=h.device)
    ce[batch.masked] = F.cross_entropy(logits.float(), batch.targets[batch.masked], reduction="none")
    return ce


def diffusion_loss(model: Transformer, batch: Batch) -> torch.Tensor:
    """The 1/t-weighted masked-diffusion loss, with t taken as the realised masking rate
    (masked slots / hole slots) rather than the sampled one.  In expectation they agree; but
    an example drawn with t = 0.001 still gets one masked slot, and weighting that slot by
    1000 / hole_size let single tokens dominate small batches (seen: training stalled at
    unigram loss).  With the realised rate each example's loss is its mean over masked slots."""
    ce = masked_cross_entropy(model, batch)
    per_example = ce.sum(1) / batch.masked.sum(1).clamp(min=1)
    return per_example.mean()


@torch.no_grad()
def validation_loss(model: Transformer, batches: list[Batch]) -> float:
    """Unweighted cross-entropy per masked slot on fixed validation batches (comparable across runs)."""
    model.eval()
    total, count = 0.0, 0
    for b in batches:
        total += float(masked_cross_entropy(model, b).sum())
        count += int(b.masked.sum())
    model.train()
    return total / max(count, 1)


def lr_at(step: int, progress: float, args) -> float:
    """Linear warmup, then cosine decay to 10% over `progress` in [0, 1] (steps or wall time)."""
    if step < args.warmup:
        return args.lr * (step + 1) / args.warmup
    return args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def save_checkpoint(out: Path, model: Transformer, opt: torch.optim.Optimizer, step: int, history: list,
                    seconds: float) -> None:
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "ckpt_model.safetensors"))
    names = {id(p): n for n, p in model.named_parameters()}
    opt_state = {}
    for group in opt.param_groups:
        for p in group["params"]:
            for key, val in opt.state.get(p, {}).items():
                opt_state[f"{names[id(p)]}::{key}"] = val.reshape(-1) if val.dim() == 0 else val.contiguous()
    save_file(opt_state, str(out / "ckpt_optim.safetensors"))
    (out / "ckpt.json").write_text(json.dumps({"step": step, "history": history, "seconds": seconds}))


def load_checkpoint(out: Path, model: Transformer, opt: torch.optim.Optimizer) -> tuple[int, list, float]:
    meta = json.loads((out / "ckpt.json").read_text())
    model.load_state_dict(load_file(str(out / "ckpt_model.safetensors")))
    params = dict(model.named_parameters())
    for key, val in load_file(str(out / "ckpt_optim.safetensors")).items():
        name, field = key.split("::")
        opt.state[params[name]][field] = val.reshape(()) if field == "step" else val
    return meta["step"], meta["history"], meta.get("seconds", 0.0)


def plot_history(history: list, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # plotting is optional (extra "train")
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot([h["step"] for h in history], [h["loss"] for h in history], label="train (1/t weighted)", alpha=0.6)
    val = [h for h in history if "val" in h]
    ax.plot([h["step"] for h in val], [h["val"] for h in val], "o-", label="validation CE / masked slot")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def export(model: Transformer, tok: CodeTokenizer, directory: Path, meta: dict) -> None:
    model.save(directory)  # bf16 safetensors + config.json
    tok.save(directory / "tokenizer.json")
    (directory / "training.json").write_text(json.dumps(meta, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="diffill train", description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", type=Path, default=Path("data/corpus"))
    ap.add_argument("--out", type=Path, default=Path("runs/small"))
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--tokenizer-mb", type=float, default=30.0, help="MB of corpus to fit the tokenizer on")
    ap.add_argument("--train-mb", type=float, default=60.0, help="MB of corpus text held in memory for sampling")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--seq-len", type=int, default=256)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3000)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--save-every", type=int, default=100)
    ap.add_argument("--val-every", type=int, default=200)
    ap.add_argument("--minutes", type=float, default=None,
                    help="train for this much wall time in all (resumes count): the learning-rate schedule "
                         "then follows the clock, so a slow or shared machine still ends with a decayed rate")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--export", type=Path, default=None, help="write the shippable model here when done")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)

    tok_path = args.out / "tokenizer.json"
    if tok_path.exists():
        tok = CodeTokenizer.load(tok_path)
    else:
        texts = _take_mb(read_texts(args.corpus / "train.jsonl.gz"), args.tokenizer_mb)
        tok = CodeTokenizer.train(iter(texts), vocab_size=args.vocab)
        tok.save(tok_path)
        print(f"tokenizer: {tok.vocab_size} tokens fitted on {args.tokenizer_mb} MB")

    train_texts = _take_mb(read_texts(args.corpus / "train.jsonl.gz"), args.train_mb)
    valid_texts = list(read_texts(args.corpus / "valid.jsonl.gz"))
    sampler = ExampleSampler(train_texts, tok, args.seq_len, seed=args.seed)
    val_batches = [ExampleSampler(valid_texts, tok, args.seq_len, seed=1234).batch(args.batch) for _ in range(4)]

    cfg = ModelConfig(vocab_size=tok.vocab_size, dim=args.dim, n_layers=args.layers, n_heads=args.heads,
                      ffn_hidden=64 * round(8 * args.dim / 3 / 64), max_seq_len=args.seq_len)
    model = Transformer(cfg).to(args.device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    step, history, seconds_before = 0, [], 0.0
    if (args.out / "ckpt.json").exists():
        step, history, seconds_before = load_checkpoint(args.out, model, opt)
        print(f"resumed from step {step}")
    print(f"model: {model.num_params() / 1e6:.2f}M parameters, {asdict(cfg)}")
    val_batches = [_to(b, args.device) for b in val_batches]

    from tqdm import tqdm

    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if args.device.startswith("cuda") else _null()
    t0 = time.time()
    tokens_per_step = args.batch * args.seq_len
    bar = tqdm(total=args.steps, initial=step, desc="train", dynamic_ncols=True)
    def elapsed() -> float:
        return seconds_before + time.time() - t0

    def progress() -> float:
        return elapsed() / (args.minutes * 60) if args.minutes else step / args.steps

    while step < args.steps and progress() < 1.0:
        batch = _to(sampler.batch(args.batch), args.device)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, progress(), args)
        with autocast:
            loss = diffusion_loss(model, batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        step += 1
        record = {"step": step, "loss": round(loss.item(), 4), "tokens": step * tokens_per_step,
                  "lr": round(opt.param_groups[0]["lr"], 6), "seconds": round(elapsed(), 1)}
        if step % args.val_every == 0 or step == args.steps:
            with autocast:
                record["val"] = round(validation_loss(model, val_batches), 4)
        history.append(record)
        bar.update(1)
        bar.set_postfix(loss=f"{record['loss']:.3f}", val=record.get("val", ""))
        done = step == args.steps or progress() >= 1.0
        if step % args.save_every == 0 or done:
            if done and "val" not in record:
                with autocast:
                    record["val"] = round(validation_loss(model, val_batches), 4)
            save_checkpoint(args.out, model, opt, step, history, elapsed())
            plot_history(history, args.out / "loss.png")
    bar.close()
    if args.export:
        meta = {"steps": step, "tokens_seen": step * tokens_per_step, "seq_len": args.seq_len,
                "batch": args.batch, "device": args.device, "threads": torch.get_num_threads(),
                "wall_seconds": round(elapsed()), "final": history[-1] if history else None}
        export(model.float().cpu(), tok, args.export, meta)
        print(f"exported to {args.export}")
    return 0


def _take_mb(texts, mb: float) -> list[str]:
    out, total = [], 0
    for t in texts:
        out.append(t)
        total += len(t)
        if total >= mb * 1e6:
            break
    return out


def _to(b: Batch, device: str) -> Batch:
    return Batch(*(x.to(device) for x in (b.ids, b.targets, b.hole, b.masked, b.weight)))


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


if __name__ == "__main__":
    raise SystemExit(main())
