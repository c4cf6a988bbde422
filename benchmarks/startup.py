"""Start-up: the seconds from a fresh interpreter to the first training epoch, phase by phase, beside what any
PyTorch training script pays before its first step.

Usage (from the repository root):  python benchmarks/startup.py [--model lightgcn] [--dataset scientific]
                                       [--reps N] [--json]

Each repetition starts new interpreters (one thread each, so the figures do not depend on the machine's
cores):
- phases: `import torch`; `import distillrec.experiment.api` (what `distillrec train` imports); loading the
  dataset; building the model; building the trainer (its Adam: PyTorch imports its compiler stack the first
  time an optimiser is made); up to the first batch of epoch 1;
- floor: `import torch` and one `torch.optim.Adam` in a bare interpreter, the start-up every PyTorch
  trainer has;
- CLI: the wall time of `distillrec train --set epochs=1` minus the epoch's own train and eval seconds
  (from its history.csv), i.e. start-up plus writing the run folder and the final test evaluation.
Medians over the repetitions; the ratio start-up / floor is what distillrec adds on top of PyTorch.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PHASES = """
import time, json, sys
t = [time.perf_counter()]
import torch
torch.set_num_threads(1)
t.append(time.perf_counter())
import distillrec.experiment.api
t.append(time.perf_counter())
from distillrec.data.registry import load_dataset
from distillrec.models.registry import build_model
from distillrec.training.config import TrainConfig
from distillrec.training.trainer import Trainer
ds = load_dataset(sys.argv[2])
t.append(time.perf_counter())
model = build_model(sys.argv[1], ds)
t.append(time.perf_counter())
trainer = Trainer(model, ds, TrainConfig(epochs=1, seed=0), quiet=True)
t.append(time.perf_counter())
model.fit(ds)
model.on_epoch_start(1)
next(iter(trainer.task.batches(trainer.generator)))
t.append(time.perf_counter())
print(json.dumps([b - a for a, b in zip(t, t[1:])]))
"""
NAMES = (
    "import torch",
    "import distillrec",
    "load dataset",
    "build model",
    "build trainer (Adam)",
    "first batch",
)
FLOOR = "import torch; torch.set_num_threads(1); torch.optim.Adam([torch.zeros(1, requires_grad=True)])"


def timed(cmd: list[str]) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=child_env()).stdout
    return time.perf_counter() - t0, out


def child_env() -> dict[str, str]:
    import os

    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def cli_overhead(model: str, dataset: str) -> float:
    """Wall of a one-epoch `distillrec train` less the epoch's train and eval seconds."""
    with tempfile.TemporaryDirectory() as out:
        cmd = [sys.executable, "-c", "from distillrec.cli import main; main()", "train", "-m", model]
        cmd += ["-d", dataset, "--set", "epochs=1", "--out", out, "--quiet"]
        wall, _ = timed(cmd)
        (history,) = Path(out).rglob("history.csv")
        row = next(csv.DictReader(history.open()))
        return wall - float(row["train_s"]) - float(row["eval_s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="lightgcn")
    ap.add_argument("--dataset", default="scientific")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    phases, floors, clis = [], [], []
    for _ in range(args.reps):
        wall, out = timed([sys.executable, "-c", PHASES, args.model, args.dataset])
        phases.append([*json.loads(out.strip().splitlines()[-1]), wall])
        floors.append(timed([sys.executable, "-c", FLOOR])[0])
        clis.append(cli_overhead(args.model, args.dataset))
    median = [statistics.median(col) for col in zip(*phases, strict=True)]
    startup = median[-1]  # interpreter start to the first batch, measured from outside
    floor = statistics.median(floors)
    result = {
        "benchmark": "startup",
        "model": args.model,
        "dataset": args.dataset,
        "reps": args.reps,
        "phases_s": {n: round(v, 3) for n, v in zip(NAMES, median, strict=False)},
        "startup_s": round(startup, 3),
        "torch_floor_s": round(floor, 3),
        "ratio": round(startup / floor, 2),
        "added_by_distillrec_s": round(startup - floor, 3),
        "cli_without_epoch_s": round(statistics.median(clis), 3),
    }
    if not args.json:
        print(f"start-up of {args.model} on {args.dataset}, one thread, median of {args.reps}")
        for name, v in result["phases_s"].items():
            print(f"  {name:<24}{v:>8.3f} s")
        print(f"  {'fresh interpreter -> first batch':<34}{startup:>8.3f} s")
        print(f"  {'floor: import torch + one Adam':<34}{floor:>8.3f} s   ratio {startup / floor:.2f}x")
        print(f"  {'CLI, one epoch, less the epoch':<34}{result['cli_without_epoch_s']:>8.3f} s")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
