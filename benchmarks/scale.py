"""Elec scale: one training epoch and one full evaluation of LightGCN, FREEDOM, LATTICE and MGCN on a seeded
synthetic dataset shaped like Amazon Electronics in the multimodal papers, at fractions of its size.

Usage (from the repository root):
    python benchmarks/scale.py [--models lightgcn,freedom,lattice,mgcn] [--fractions 0.125,0.25,0.5,1]
                               [--threads T] [--device cpu|cuda] [--max-batches N] [--timeout S] [--json]
                               [--update FILE]

The dataset (`elec_like`): 192,000 users, 63,000 items and about 1.7M interactions at full size, with power-law
degrees on both sides (users Zipf-distributed from 5 interactions up, items drawn by a power-law popularity);
each user's interactions split one test, one validation, the rest training. Features: 4096-d image and 384-d
text, each a seeded low-rank signal (rank 32, so kNN graphs have structure) plus noise. Every (model, fraction)
runs in a fresh process, which reports: the set-up (model, trainer and graphs, kNN graphs included; PyTorch's
one-off imports at the first optimiser are made before the clock starts), one training epoch
(batch 2048; with --max-batches N, the epoch's up-front sampling and its first batch, which carries the work
done once per epoch at the first training call, plus the mean step of the other N - 1 batches times the
epoch's remaining batches: every batch of these models does the same full-graph work, so a full-size epoch
is measured in minutes, not hours), one full evaluation of the test split (all items ranked, top 50), and the process's peak
resident memory. The slope is the least-squares exponent b of time ≈ a · size^b over the fractions run (1 is
linear in the number of interactions). The kNN graphs are built in row chunks and kept sparse (top-k per
row), never as an items x items matrix, and built in every set-up (the on-disk kNN cache is off: the figures
are a first run's). The last line of the output is one JSON object.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import resource
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch

FULL = {"users": 192_000, "items": 63_000, "interactions": 1_700_000}
WIDTHS = {"image": 4096, "text": 384}
MODELS = ("lightgcn", "freedom", "lattice", "mgcn")
COLD = {**os.environ, "DISTILLREC_CACHE": "off"}  # every set-up builds its kNN graphs (no on-disk cache)


def elec_like(fraction: float, seed: int = 0) -> Any:
    """The synthetic Elec-shaped dataset at `fraction` of its size (a distillrec Dataset, in memory)."""
    from distillrec.data.dataset import Dataset

    rng = np.random.default_rng(seed)
    n_users = max(10, round(FULL["users"] * fraction))
    n_items = max(10, round(FULL["items"] * fraction))
    target = round(FULL["interactions"] * fraction)
    # user degrees: Zipf tail from 5 up, rescaled so that their sum is about the target
    raw = 5 + rng.zipf(2.0, n_users).clip(max=n_items // 4)
    degrees = np.maximum(5, np.round(raw * (target / raw.sum()))).astype(np.int64)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    popularity = rng.permutation(popularity / popularity.sum())
    users = np.repeat(np.arange(n_users), degrees)
    items = rng.choice(n_items, size=len(users), p=popularity)
    keys = np.unique(users * n_items + items)  # a user meets an item once
    users, items = keys // n_items, keys % n_items
    order = np.lexsort((rng.random(len(users)), users))  # a random order within each user
    users, items = users[order], items[order]
    start = np.r_[0, np.flatnonzero(np.diff(users)) + 1]
    rank = np.arange(len(users)) - np.repeat(start, np.diff(np.r_[start, len(users)]))
    label = np.where(rank == 0, 2, np.where(rank == 1, 1, 0))  # 2 = test, 1 = valid, 0 = train

    def matrix(which: int) -> sp.csr_matrix:
        keep = label == which
        ones = np.ones(int(keep.sum()), dtype=np.float32)
        return sp.csr_matrix((ones, (users[keep], items[keep])), shape=(n_users, n_items))

    gen = torch.Generator().manual_seed(seed)
    features = {}
    for m, w in WIDTHS.items():
        latent = torch.randn(n_items, 32, generator=gen) @ torch.randn(32, w, generator=gen)
        features[m] = (latent + 0.5 * torch.randn(n_items, w, generator=gen)).float()
    return Dataset(
        name=f"elec-like-{fraction:g}",
        n_users=n_users,
        n_items=n_items,
        train=matrix(0),
        valid=matrix(1),
        test=matrix(2),
        features=features,
    )


def run_one(model_name: str, fraction: float, device: str, max_batches: int | None = None) -> dict[str, Any]:
    """One (model, fraction) in this process: set-up, one epoch, one full test evaluation, peak memory."""
    from distillrec.models.registry import build_model
    from distillrec.training.config import TrainConfig
    from distillrec.training.trainer import Trainer

    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # PyTorch's one-off optimiser imports, not timed
    t0 = time.perf_counter()
    ds = elec_like(fraction)
    data_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model = build_model(model_name, ds)
    dev = torch.device(device)
    trainer = Trainer(model, ds, TrainConfig(batch_size=2048, seed=0), device=dev, quiet=True)
    with torch.no_grad():  # graphs (kNN included) are built at the first representation
        trainer.model.represent(trainer.features)
    setup_s = time.perf_counter() - t0
    total_batches = math.ceil(ds.train.nnz / trainer.config.batch_size)
    timed = min(max_batches or total_batches, total_batches)
    delivered: list[float] = []  # when each timed batch reached the training step
    batches = trainer.task.batches

    def first_batches(generator: torch.Generator) -> Iterator[Any]:
        for batch in itertools.islice(batches(generator), timed):
            delivered.append(time.perf_counter())
            yield batch

    trainer.task.batches = first_batches  # type: ignore[method-assign]
    t0 = time.perf_counter()
    trainer._train_epoch(1)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    end = time.perf_counter()
    # up-front work (the epoch's sampling, the epoch hook) once; the first batch once, as it carries work done
    # once per epoch at the first training call (LATTICE's neighbour search); the later timed batches' mean
    # step for every other batch of the epoch
    if timed >= 2:
        rest = (end - delivered[1]) / (timed - 1)
        epoch_s = (delivered[1] - t0) + rest * (total_batches - 1)
    else:
        epoch_s = (delivered[0] - t0) + (end - delivered[0]) * total_batches
    t0 = time.perf_counter()
    trainer.evaluate("test")
    eval_s = time.perf_counter() - t0
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    return {
        "model": model_name,
        "fraction": fraction,
        "users": ds.n_users,
        "items": ds.n_items,
        "train_pairs": int(ds.train.nnz),
        "device": str(dev),
        "data_s": round(data_s, 2),
        "setup_s": round(setup_s, 2),
        "epoch_s": round(epoch_s, 2),
        "batches_timed": timed,
        "batches_per_epoch": total_batches,
        "eval_s": round(eval_s, 2),
        "peak_rss_gib": round(peak_gib, 2),
        "peak_cuda_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if dev.type == "cuda" else None,
    }


def slope(rows: list[dict[str, Any]], key: str) -> float | None:
    """Least-squares b in key ≈ a · train_pairs^b over the rows (None with fewer than two sizes)."""
    pts = [(math.log(r["train_pairs"]), math.log(r[key])) for r in rows if r.get(key)]
    if len(pts) < 2:
        return None
    x, y = np.array(pts).T
    return round(float(np.polyfit(x, y, 1)[0]), 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--fractions", default="0.125,0.25,0.5,1")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per (model, fraction)")
    ap.add_argument(
        "--max-batches",
        type=int,
        default=None,
        help="time only the epoch's first N batches and scale their mean step to the whole epoch",
    )
    ap.add_argument("--json", action="store_true")
    ap.add_argument(
        "--update",
        metavar="FILE",
        help="also write the JSON to FILE, keeping the models of an earlier FILE that this run did not measure",
    )
    ap.add_argument("--one", nargs=2, metavar=("MODEL", "FRACTION"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.one:
        print(json.dumps(run_one(args.one[0], float(args.one[1]), args.device, args.max_batches)))
        return
    fractions = [float(f) for f in args.fractions.split(",")]
    results: dict[str, list[dict[str, Any]]] = {}
    failures = []
    for model_name in [m for m in args.models.split(",") if m]:
        results[model_name] = []
        for f in fractions:
            cmd = [sys.executable, __file__, "--one", model_name, str(f), "--threads", str(args.threads)]
            cmd += ["--device", args.device]
            if args.max_batches:
                cmd += ["--max-batches", str(args.max_batches)]
            try:
                done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout, env=COLD)
            except subprocess.TimeoutExpired:
                failures.append({"model": model_name, "fraction": f, "why": f"over {args.timeout:g} s"})
                break  # a larger fraction would take longer still
            if done.returncode != 0:
                tail = done.stderr.strip().splitlines()[-1:] or ["?"]
                failures.append({"model": model_name, "fraction": f, "why": tail[0]})
                break
            row = json.loads(done.stdout.strip().splitlines()[-1])
            results[model_name].append(row)
            if not args.json:
                print(
                    f"{model_name:9} x{f:<6g} {row['users']:>7} users {row['items']:>6} items "
                    f"{row['train_pairs']:>8} pairs  setup {row['setup_s']:>7.1f} s  epoch {row['epoch_s']:>7.1f} s"
                    f"  eval {row['eval_s']:>6.1f} s  peak {row['peak_rss_gib']:>5.1f} GiB",
                    flush=True,
                )
    summary = {
        m: {k: slope(rows, k) for k in ("setup_s", "epoch_s", "eval_s")}
        for m, rows in results.items()
        if rows
    }
    out = {
        "benchmark": "scale",
        "device": args.device,
        "threads": args.threads,
        "max_batches": args.max_batches,
        "runs": results,
        "slopes": summary,
        "failures": failures,
    }
    if args.update:
        out = updated(args.update, out)
    print(json.dumps(out))


def updated(path: str, new: dict[str, Any]) -> dict[str, Any]:
    """`new` with the models of the JSON at `path` that it did not measure (same settings only), written back."""
    from pathlib import Path

    from distillrec.atomic import atomic_write_text

    file = Path(path)
    if file.exists():
        old = json.loads(file.read_text())
        settings = ("benchmark", "device", "threads", "max_batches")
        if any(old.get(k) != new[k] for k in settings):
            sys.exit(f"{path}: measured with other settings ({[old.get(k) for k in settings]}); not merged")
        measured = set(new["runs"])
        for key in ("runs", "slopes"):
            new[key] = {**{m: v for m, v in old[key].items() if m not in measured}, **new[key]}
        new["failures"] = [f for f in old["failures"] if f["model"] not in measured] + new["failures"]
    atomic_write_text(file, json.dumps(new, indent=4) + "\n")
    return new


if __name__ == "__main__":
    main()
