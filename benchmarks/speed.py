"""Speed of full evaluation and of a LightGCN training epoch, each beside the bare floor of the same work.

Usage (from the repository root):  python benchmarks/speed.py [--data PATH] [--reps N] [--json]

The floors are timed in the same process on the same data, so the ratios stay meaningful on a noisy or
different machine:
- eval floor: chunked dense score matmul + top-50 into a reused buffer, for the same users;
- epoch floor: a bare loop doing only the epoch's work with the fastest primitives (CSR propagation with
  the symmetric backward, BPR, Adam), negatives drawn without the positive check.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from distillrec.data.registry import load_dataset
from distillrec.data.sampling import NegativeSampler, epoch_batches
from distillrec.eval.ranking import Evaluator
from distillrec.models.graph import sym_norm_adjacency, symmetric_spmm, to_torch_csr
from distillrec.models.registry import build_model
from distillrec.training.config import TrainConfig
from distillrec.training.scoring import model_score_fn
from distillrec.training.trainer import Trainer


def _sync() -> None:
    """Wait for queued GPU work, so that a timing covers it (nothing to wait for on a CPU)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def median_time(fn, reps: int) -> float:  # noqa: ANN001
    times = []
    for _ in range(reps):
        _sync()
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def timing_parser(doc: str, reps: int, threads: int, device: bool = False) -> argparse.ArgumentParser:
    """The options every benchmark in this folder shares: repetitions, threads, JSON output (and, where the
    benchmark can run on a GPU, `--device`)."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--reps", type=int, default=reps)
    ap.add_argument("--threads", type=int, default=threads)
    ap.add_argument("--json", action="store_true")
    if device:
        ap.add_argument("--device", default="cpu", help="cpu or cuda (the JSON says which ran)")
    return ap


def eval_floor(user: torch.Tensor, item: torch.Tensor, users: torch.Tensor, k: int, chunk: int) -> None:
    buf = torch.empty(chunk, item.shape[0])
    item_t = item.T.contiguous()
    for s in range(0, len(users), chunk):
        u = users[s : s + chunk]
        out = torch.mm(user[u], item_t, out=buf[: len(u)])
        torch.topk(out, k, dim=1)


def epoch_floor(
    train, n_users: int, n_items: int, d: int, batch: int, layers: int, gen: torch.Generator
) -> None:  # noqa: ANN001
    adj = to_torch_csr(sym_norm_adjacency(train))
    emb = torch.nn.Parameter(torch.randn(n_users + n_items, d) * 0.1)
    opt = torch.optim.Adam([emb], lr=1e-3)
    coo = train.tocoo()
    users_all = torch.from_numpy(coo.row).long()
    items_all = torch.from_numpy(coo.col).long()
    perm = torch.randperm(len(users_all), generator=gen)

    def run() -> None:
        for s in range(0, len(perm), batch):
            idx = perm[s : s + batch]
            u, p = users_all[idx], items_all[idx]
            n = torch.randint(0, n_items, (len(idx),), generator=gen)
            x, total = emb, emb
            for _ in range(layers):
                x = symmetric_spmm(adj, x)
                total = total + x
            final = total / (layers + 1)
            eu, ep, en = final[u], final[n_users + p], final[n_users + n]
            loss = F.softplus((eu * en).sum(-1) - (eu * ep).sum(-1)).mean() + 1e-4 * (
                emb[u].pow(2).sum() + emb[n_users + p].pow(2).sum() + emb[n_users + n].pow(2).sum()
            ) / (2 * len(idx))
            opt.zero_grad()
            loss.backward()
            opt.step()

    return run


def main() -> None:
    ap = timing_parser(__doc__, reps=5, threads=2)
    ap.add_argument("--data", default="../shared/datasets/amazon-baby")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = load_dataset(Path(args.data))
    gen = torch.Generator().manual_seed(0)

    # --- full evaluation, K = 50
    model = build_model("lightgcn", ds, {"embedding_size": 64, "n_layers": 2})
    ev = Evaluator(ds, "mmrec", ks=(10, 20, 50), batch_size=4096)
    ev.plan("test")

    def full_eval() -> None:
        with torch.no_grad():
            rep = model.represent({})  # once per evaluation, as the trainer does
            ev.evaluate(model_score_fn(model, rep), "test")

    with torch.no_grad():
        rep = model.represent({})
    users = ev.plan("test").users
    full_eval()
    eval_s = median_time(full_eval, args.reps)
    eval_floor_s = median_time(lambda: eval_floor(rep.user, rep.item, users, 50, 4096), args.reps)

    # --- LightGCN epoch
    cfg = TrainConfig(batch_size=2048, lr=1e-3, seed=0)
    trainer = Trainer(build_model("lightgcn", ds, {"embedding_size": 64, "n_layers": 2}), ds, cfg, quiet=True)
    epoch_s = median_time(lambda: trainer._train_epoch(1), args.reps)
    floor_run = epoch_floor(ds.train, ds.n_users, ds.n_items, 64, 2048, 2, gen)
    epoch_floor_s = median_time(floor_run, args.reps)

    # --- sampling and batching alone, for one epoch
    sampler = NegativeSampler(ds.train, seed=0)

    def sampling() -> None:
        for u, _ in epoch_batches(ds.train, 2048, gen):
            sampler.sample(u, gen)

    sampling_s = median_time(sampling, args.reps)
    result = {
        "dataset": ds.name,
        "users": ds.n_users,
        "items": ds.n_items,
        "train_pairs": int(ds.train.nnz),
        "eval_users": int(len(users)),
        "threads": torch.get_num_threads(),
        "eval_s": round(eval_s, 4),
        "eval_floor_s": round(eval_floor_s, 4),
        "eval_ratio": round(eval_s / eval_floor_s, 3),
        "epoch_s": round(epoch_s, 4),
        "epoch_floor_s": round(epoch_floor_s, 4),
        "epoch_ratio": round(epoch_s / epoch_floor_s, 3),
        "sampling_s": round(sampling_s, 4),
        "sampling_share_of_epoch": round(sampling_s / epoch_s, 4),
    }
    if args.json:
        print(json.dumps(result))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"speed on {ds.name} ({ds.n_users} users x {ds.n_items} items, {ds.train.nnz} train pairs)"
    )
    for col in ("work", "distillrec s", "floor s", "ratio"):
        table.add_column(col, justify="right")
    table.add_row(
        "full evaluation, K=50", f"{eval_s:.3f}", f"{eval_floor_s:.3f}", f"{eval_s / eval_floor_s:.2f}x"
    )
    table.add_row(
        "LightGCN epoch", f"{epoch_s:.3f}", f"{epoch_floor_s:.3f}", f"{epoch_s / epoch_floor_s:.2f}x"
    )
    table.add_row(
        "negative sampling + batching", f"{sampling_s:.3f}", "-", f"{sampling_s / epoch_s:.1%} of epoch"
    )
    Console().print(table)


if __name__ == "__main__":
    main()
