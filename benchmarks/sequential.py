"""Seconds per SASRec training epoch on `scientific`, beside a bare floor and RecBole's padded layout.

Usage (from the repository root):  python benchmarks/sequential.py [--reps N] [--threads T] [--json]

All three are timed in the same process on the same data, so the ratios hold on a noisy machine:
- distillrec: one trainer epoch (prefixes gathered per batch, flat-token SASRec, CE, Adam);
- floor: the same model, loss and optimiser over batches built once beforehand (no sampling, no
  trainer): what the epoch costs without the task's own work;
- padded to 50: the same weights, loss and optimiser, but every batch padded to 50 positions and
  computed in full with a causal mask, as RecBole lays sequences out (its own 28 s/epoch, a quiet
  machine, is in ANCHORS.md): what skipping the padding saves.
Also the full validation evaluation (2,928 users, all 1,585 items ranked).
"""

from __future__ import annotations

import json

import torch
import torch.nn.functional as F
from speed import median_time, timing_parser  # this folder is on sys.path when run

from distillrec.data.registry import load_dataset
from distillrec.experiment.api import resolve_train_config
from distillrec.models.registry import build_model
from distillrec.training.trainer import Trainer


def padded_loss(model, features, batch, width: int = 50) -> torch.Tensor:  # noqa: ANN001
    """SASRec's CE loss computed over the whole [B, width] padded layout (RecBole's way)."""
    items = F.pad(batch.items, (0, width - batch.items.shape[1]), value=model.pad)
    rep = model.represent(features)
    x = model.drop(model.ln(rep.extras["input"][items] + model.pos_emb.weight[:width]))
    for block in model.blocks:
        b, n, d = x.shape
        q, k, v = block.qkv(x).view(b, n, 3, block.heads, d // block.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, dropout_p=block.attn_dropout, is_causal=True)
        x = block.ln1(x + block.drop(block.out(a.transpose(1, 2).reshape(b, n, d))))
        x = block.ln2(x + block.drop(block.ffn2(F.gelu(block.ffn1(x)))))
    h = x[torch.arange(len(items)), batch.lengths - 1]
    return F.cross_entropy(model.score_sequences(rep, h), batch.target)


def main() -> None:
    args = timing_parser(__doc__, reps=3, threads=1).parse_args()
    torch.set_num_threads(args.threads)
    ds = load_dataset("scientific")
    cfg = resolve_train_config("sasrec", {"epochs": 1}, seed=0)
    torch.manual_seed(0)
    model = build_model("sasrec", ds)
    trainer = Trainer(model, ds, cfg, quiet=True)
    epoch = [0]

    def ours() -> None:
        epoch[0] += 1
        trainer._train_epoch(epoch[0])

    sampler = trainer.task.samplers["train"]
    g = torch.Generator().manual_seed(0)
    prebuilt = list(sampler.epoch(cfg.batch_size, g))
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)

    def over(batches, loss_fn) -> None:  # noqa: ANN001
        for b in batches:
            loss = loss_fn(b)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def evaluate() -> None:
        trainer.evaluate("valid")

    result = {
        "samples_per_epoch": len(sampler),
        "distillrec_s_per_epoch": median_time(ours, args.reps),
        "floor_s_per_epoch": median_time(
            lambda: over(prebuilt, lambda b: model.loss(model.represent(trainer.features), b)), args.reps
        ),
        "padded50_s_per_epoch": median_time(
            lambda: over(prebuilt, lambda b: padded_loss(model, trainer.features, b)),
            1,  # slow: once
        ),
        "valid_eval_s": median_time(evaluate, args.reps),
        "threads": args.threads,
        "recbole_s_per_epoch_anchor": 28.0,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"SASRec on scientific, {result['samples_per_epoch']} training samples, {args.threads} thread(s)")
    print(f"  distillrec epoch   {result['distillrec_s_per_epoch']:.2f} s")
    print(f"  floor (prebuilt)   {result['floor_s_per_epoch']:.2f} s")
    print(f"  padded to 50       {result['padded50_s_per_epoch']:.2f} s")
    print(f"  valid evaluation   {result['valid_eval_s']:.2f} s")
    print("  RecBole 1.2.1      28 s per epoch (ANCHORS.md, quiet machine)")


if __name__ == "__main__":
    main()
