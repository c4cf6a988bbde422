"""Every top-K backbone's training epoch and full evaluation, each beside floors timed in the same run.

Usage (from the repository root):
    python benchmarks/backbones.py [--models lightgcn,mgcn,...] [--data scientific|baby|both]
                                   [--reps N] [--threads T] [--device cpu|cuda] [--json]

Per model, on `scientific` (real features) and on Baby-shaped data (amazon-baby's interactions with seeded
random features of MMRec's Baby widths, image 4096 and text 384), one thread by default:
- epoch: `Trainer._train_epoch` (sampling, batching, the model's forward/backward, Adam, loss bookkeeping);
- bare loop: the same model's represent + loss + backward + Adam step over batches drawn beforehand, with
  nothing else; epoch / bare loop is what the trainer and the sampler add around the model's own work;
- evaluation: one validation pass as the trainer runs it (represent, score every item, mask, top-K, metrics);
- matmul floor: the bare all-user score matmul + top-50 of the model's user and item shapes (for a model that
  does not score by a dot product, MAML, this is the LightGCN-sized matmul of the same shapes, and the
  ratio says how far its scoring is from one);
- model floor: the model's own forward in evaluation mode (its representation, graphs prebuilt) and its own
  scores of every evaluated user, then top-50, with nothing else: evaluation / model floor is what masking,
  ranking bookkeeping and metrics add to the model's inherent work.
The model-internal floors (the fastest primitives for the same maths) are in speed.py (LightGCN), and in
counterfactual_views.py (MGCN, FREEDOM, LATTICE forwards). Prints a table; with --json, one JSON object.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
from speed import median_time, timing_parser  # this folder is on sys.path when run

from distillrec.data.registry import load_dataset
from distillrec.models.registry import build_model, model_class, model_names
from distillrec.training.config import TrainConfig
from distillrec.training.trainer import Trainer

BABY_WIDTHS = {"image": 4096, "text": 384}  # MMRec's Baby features (VGG image, sentence-transformers text)


def baby_shaped(path: Path) -> Any:
    """amazon-baby's interactions with seeded random features of MMRec's Baby widths."""
    ds = load_dataset(path)
    gen = torch.Generator().manual_seed(0)
    ds.features = {m: torch.rand(ds.n_items, w, generator=gen) for m, w in BABY_WIDTHS.items()}
    return ds


def trainable_models() -> list[str]:
    return [n for n in model_names("topk") if getattr(model_class(n), "trainable", True)]


def bare_loop(trainer: Trainer) -> Any:
    """The model's own work for one epoch's batches, drawn beforehand: represent, loss, backward, step."""
    batches = list(trainer.task.batches(torch.Generator().manual_seed(1)))
    model, features = trainer.model, trainer.features
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)

    def run() -> None:
        model.on_epoch_start(1)
        for batch in batches:
            rep = model.represent(features)
            out = model.loss(rep, batch)
            total = sum(out.values()) if isinstance(out, dict) else out
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()

    return run


def matmul_floor(trainer: Trainer) -> Any:
    """All evaluated users' scores as one chunked matmul of the model's shapes, then top-50."""
    with torch.no_grad():
        rep = trainer.model.represent(trainer.features)
    users = trainer.task.evaluator.plan("valid").users
    n_items, d = rep.item.shape[0], rep.item.shape[-1]
    gen = torch.Generator().manual_seed(0)
    dev = trainer.device
    user = torch.randn(int(rep.user.shape[0]), d, generator=gen).to(dev)
    item_t = torch.randn(n_items, d, generator=gen).T.contiguous().to(dev)
    chunk = trainer.config.eval_batch_size
    buf = torch.empty(chunk, n_items, device=dev)

    def run() -> None:
        for s in range(0, len(users), chunk):
            u = users[s : s + chunk]
            torch.topk(torch.mm(user[u], item_t, out=buf[: len(u)]), 50, dim=1)

    return run


def model_floor(trainer: Trainer) -> Any:
    """The model's own evaluation work: represent (no grad, eval mode), its scores of every evaluated user in
    the evaluator's chunks, top-50."""
    model, features = trainer.model, trainer.features
    users = trainer.task.evaluator.plan("valid").users
    chunk = trainer.config.eval_batch_size

    def run() -> None:
        model.eval()
        with torch.no_grad():
            rep = model.represent(features)
            for s in range(0, len(users), chunk):
                torch.topk(model.score(rep, users[s : s + chunk]), 50, dim=1)
        model.train()

    return run


def measure(name: str, ds: Any, reps: int, device: str) -> dict[str, float]:
    cfg = TrainConfig(batch_size=2048, seed=0)
    trainer = Trainer(build_model(name, ds), ds, cfg, device=torch.device(device), quiet=True)
    trainer._train_epoch(1)  # graphs, caches and allocator warmed as in any epoch after the first
    row = {"epoch_s": median_time(lambda: trainer._train_epoch(2), reps)}
    row["bare_loop_s"] = median_time(bare_loop(trainer), reps)
    trainer.evaluate("valid")
    row["eval_s"] = median_time(lambda: trainer.evaluate("valid"), reps)
    row["matmul_floor_s"] = median_time(matmul_floor(trainer), reps)
    row["model_floor_s"] = median_time(model_floor(trainer), reps)
    row["epoch_ratio"] = row["epoch_s"] / row["bare_loop_s"]
    row["eval_ratio"] = row["eval_s"] / row["matmul_floor_s"]
    row["eval_model_ratio"] = row["eval_s"] / row["model_floor_s"]
    return {k: round(v, 4) for k, v in row.items()}


def main() -> None:
    ap = timing_parser(__doc__, reps=3, threads=1, device=True)
    ap.add_argument("--models", default=",".join(trainable_models()))
    ap.add_argument("--data", choices=("scientific", "baby", "both"), default="both")
    ap.add_argument("--baby", default="../shared/datasets/amazon-baby", help="amazon-baby folder")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    np.random.seed(0)
    datasets = {}
    if args.data in ("scientific", "both"):
        datasets["scientific"] = load_dataset("scientific")
    if args.data in ("baby", "both"):
        datasets["baby-shaped"] = baby_shaped(Path(args.baby))
    names = [n for n in args.models.split(",") if n]
    result: dict[str, Any] = {
        "device": args.device,
        "threads": torch.get_num_threads(),
        "reps": args.reps,
        "datasets": {},
    }
    for label, ds in datasets.items():
        rows = {name: measure(name, ds, args.reps, args.device) for name in names}
        shape = {"users": ds.n_users, "items": ds.n_items, "train_pairs": int(ds.train.nnz)}
        result["datasets"][label] = {**shape, "models": rows}
    if args.json:
        print(json.dumps(result))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    for label, block in result["datasets"].items():
        table = Table(
            title=f"{label}: {block['users']} users x {block['items']} items, {block['train_pairs']} train pairs, "
            f"{result['threads']} thread(s)"
        )
        cols = (
            "model",
            "epoch s",
            "bare loop s",
            "ratio",
            "eval s",
            "matmul floor s",
            "ratio",
            "model floor s",
        )
        for col in (*cols, "ratio"):
            table.add_column(col, justify="right")
        for name, r in block["models"].items():
            table.add_row(
                name,
                f"{r['epoch_s']:.3f}",
                f"{r['bare_loop_s']:.3f}",
                f"{r['epoch_ratio']:.2f}x",
                f"{r['eval_s']:.3f}",
                f"{r['matmul_floor_s']:.3f}",
                f"{r['eval_ratio']:.2f}x",
                f"{r['model_floor_s']:.3f}",
                f"{r['eval_model_ratio']:.2f}x",
            )
        console.print(table)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
