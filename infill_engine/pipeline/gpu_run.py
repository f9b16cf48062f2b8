"""One prepared GPU run (`scripts/train-on-gpu.sh`): train, evaluate, bring the weights home.

Made for a lent GPU machine with no network and ~10 minutes a command: it needs only the
working tree and the token shards, uses that machine's own torch, and trains two models at
once on the one GPU (small models leave most of an H100 idle, so the second one is nearly
free): `gpu-small`, the CPU default's shape, and `gpu-big` for GPU users.  Each is then
scored on a fixed sample of single-line HumanEval-Infilling problems there.

What comes back is capped (8 files of 16 MiB), so OUTDIR holds only the weights (each model's
safetensors, split under 16 MiB) and `report.json` (configs, training summaries, evaluations,
logs' tails).  `unpack` turns OUTDIR into ordinary model folders here.

  python -m infill_engine.pipeline.gpu_run run OUTDIR [--minutes M] [--presets gpu-small,gpu-big]
  python -m infill_engine.pipeline.gpu_run unpack OUTDIR --shards data/gpu-shards --to runs/gpu
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

MAX_FILE_MIB = 15.9  # the transport's cap is 16 MiB a file
EVAL_PROBLEMS = 200


def _train_command(preset: str, shards: Path, run_dir: Path, export: Path, minutes: float, device: str,
                   workers: int, compile_: bool, extra: list[str]) -> list[str]:
    cmd = [sys.executable, "-m", "infill_engine.pipeline.train", "--preset", preset, "--shards", str(shards),
           "--out", str(run_dir), "--minutes", str(minutes), "--device", device, "--workers", str(workers),
           "--export", str(export), "--max-file-mib", str(MAX_FILE_MIB), "--val-every", "500",
           "--save-every", "500", "--warmup", "200"]
    return cmd + (["--compile"] if compile_ else ["--no-compile"]) + extra


def _eval_command(model: Path, device: str, limit: int, out: Path) -> list[str]:
    return [sys.executable, "-m", "infill_engine.cli", "eval", "--data", "single", "--limit", str(limit),
            "--model", str(model), "--device", device, "--out", str(out), "--no-progress", "--workers", "8"]


def _tail(path: Path, lines: int = 40) -> list[str]:
    return path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []


def _exports(work: Path, presets: list[str]) -> dict[str, Path]:
    """The presets whose training got as far as an export, and where it is."""
    exports = {preset: work / f"{preset}.export" for preset in presets}
    return {preset: path for preset, path in exports.items() if (path / "config.json").exists()}


def run(out: Path, shards: Path, presets: list[str], minutes: float, device: str, workers: int,
        compile_: bool, eval_limit: int, eval_timeout: float, extra: list[str], work: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    report: dict = {"device": device, "minutes": minutes, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
                    "shards": json.loads((shards / "shards.json").read_text()) if (shards / "shards.json").exists()
                    else None, "models": {}}
    try:
        import torch

        report["torch"] = torch.__version__
        report["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception as exc:  # noqa: BLE001 — the report says what broke, the run goes on
        report["torch"] = f"unavailable: {exc}"
    procs = {}
    for preset in presets:
        log = work / f"{preset}.train.log"
        cmd = _train_command(preset, shards, work / preset, work / f"{preset}.export", minutes, device,
                             workers, compile_, extra)
        procs[preset] = (subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env), log)
    for preset, (proc, log) in procs.items():
        code = proc.wait()
        report["models"][preset] = {"train_exit": code, "train_log": _tail(log)}
    exports = _exports(work, presets)
    for preset, export in exports.items():
        entry = report["models"][preset]
        entry["config"] = json.loads((export / "config.json").read_text())
        entry["training"] = json.loads((export / "training.json").read_text())
        entry["weights"] = []
        for path in sorted(export.glob("model*.safetensors")):
            name = f"{preset}.{path.name}"
            shutil.copy(path, out / name)
            entry["weights"].append(name)
    # The weights are home safe before the evaluation starts, whatever happens to it.
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    evals = {}
    for preset, export in exports.items():
        log = work / f"{preset}.eval.log"
        cmd = _eval_command(export, device, eval_limit, work / f"{preset}.eval.json")
        evals[preset] = (subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT, env=env), log)
    deadline = time.time() + eval_timeout
    for preset, (proc, log) in evals.items():
        try:
            proc.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            proc.kill()
        entry = report["models"][preset]
        entry["eval_log"] = _tail(log, 12)
        result = work / f"{preset}.eval.json"
        if result.exists():
            full = json.loads(result.read_text())
            entry["eval"] = {k: v for k, v in full.items() if k != "problems"}
            entry["eval"]["completions"] = [(p["task_id"], p["completion"], p["passed"]) for p in full["problems"]]
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def unpack(out: Path, shards: Path, to: Path) -> list[Path]:
    """OUTDIR (weights + report.json) -> one ordinary model folder per preset under `to`."""
    report = json.loads((out / "report.json").read_text())
    made = []
    for preset, entry in report["models"].items():
        if "config" not in entry:
            continue
        folder = to / preset
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps(entry["config"], indent=2) + "\n")
        (folder / "training.json").write_text(json.dumps(entry["training"], indent=1) + "\n")
        shutil.copy(shards / "tokenizer.json", folder / "tokenizer.json")
        for name in entry["weights"]:
            shutil.copy(out / name, folder / name.split(".", 1)[1])
        made.append(folder)
    return made


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="gpu_run", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run")
    r.add_argument("out", type=Path)
    r.add_argument("--shards", type=Path, default=Path("data/gpu-shards"))
    r.add_argument("--presets", default="gpu-small,gpu-big")
    r.add_argument("--minutes", type=float, default=6.5)
    r.add_argument("--device", default="cuda")
    r.add_argument("--workers", type=int, default=6, help="data loader processes per model")
    r.add_argument("--no-compile", action="store_true")
    r.add_argument("--eval-limit", type=int, default=EVAL_PROBLEMS)
    r.add_argument("--eval-timeout", type=float, default=90.0, help="seconds for all evaluations together")
    r.add_argument("--work", type=Path, default=Path("runs/gpu-work"))
    r.add_argument("--train-arg", action="append", default=[], help="passed on to `diffill train` (repeatable)")
    u = sub.add_parser("unpack")
    u.add_argument("out", type=Path)
    u.add_argument("--shards", type=Path, default=Path("data/gpu-shards"))
    u.add_argument("--to", type=Path, default=Path("runs/gpu"))
    args = ap.parse_args(argv)
    if args.command == "unpack":
        for folder in unpack(args.out, args.shards, args.to):
            print(f"model: {folder}")
        return 0
    report = run(args.out, args.shards, args.presets.split(","), args.minutes, args.device, args.workers,
                 not args.no_compile, args.eval_limit, args.eval_timeout, args.train_arg, args.work)
    for preset, entry in report["models"].items():
        ev = entry.get("eval", {})
        final = (entry.get("training") or {}).get("final") or {}
        print(f"{preset}: exit {entry['train_exit']}, {final.get('tokens', 0) / 1e6:.0f}M tokens, "
              f"val_text {final.get('val_text')}, pass@1 {ev.get('pass@1')} ({ev.get('passed')}/{ev.get('n')})")
    return 0 if all(e["train_exit"] == 0 for e in report["models"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
