"""Forward cost of one CKD batch (the full model + one uni-modal view per modality) for the backbones whose
item-item kNN graphs are cached per feature tensor (MGCN, FREEDOM, LATTICE).

Usage (from the repository root):  python benchmarks/counterfactual_views.py [--reps N] [--threads T] [--json]

Timed in the same process on `scientific`:
- distillrec: full + M counterfactual forwards, the graph cache as shipped;
- one slot per modality: the same with the cache holding a single tensor per modality, so alternating
  between the training features and a mean-ablated view rebuilds the training graph at every batch;
- floor: M + 1 forwards on the training features, every graph already built.
"""

from __future__ import annotations

import json

import torch
from speed import median_time, timing_parser  # this folder is on sys.path when run

from distillrec.data.registry import load_dataset
from distillrec.models.feature_cache import FeatureCache
from distillrec.models.registry import build_model


def main() -> None:
    args = timing_parser(__doc__, reps=5, threads=1).parse_args()
    torch.set_num_threads(args.threads)
    ds = load_dataset("scientific")
    feats = {m: torch.as_tensor(f) for m, f in ds.features.items()}
    shipped = FeatureCache.max_entries
    rows = {}
    with torch.no_grad():
        for name in ("mgcn", "freedom", "lattice"):
            model = build_model(name, ds, {}).eval()

            def batch(model=model) -> None:  # noqa: ANN001
                model.represent(feats)
                for keep in feats:
                    model.counterfactual(feats, keep)

            def floor(model=model) -> None:  # noqa: ANN001
                for _ in range(len(feats) + 1):
                    model.represent(feats)

            floor()  # graphs of the training features built once
            row = {"floor_s": median_time(floor, args.reps), "distillrec_s": median_time(batch, args.reps)}
            FeatureCache.max_entries = 1
            row["one_slot_s"] = median_time(batch, args.reps)
            FeatureCache.max_entries = shipped
            rows[name] = row
    if args.json:
        print(json.dumps(rows, indent=2))
        return
    print(f"one CKD batch forward (full + {len(feats)} views) on scientific, {args.threads} thread(s)")
    print(f"  {'model':<9}{'floor':>9}{'distillrec':>12}{'ratio':>8}{'one slot':>10}{'ratio':>8}")
    for name, r in rows.items():
        print(
            f"  {name:<9}{r['floor_s']:>8.3f}s{r['distillrec_s']:>11.3f}s{r['distillrec_s'] / r['floor_s']:>7.2f}x"
            f"{r['one_slot_s']:>9.3f}s{r['one_slot_s'] / r['floor_s']:>7.2f}x"
        )


if __name__ == "__main__":
    main()
