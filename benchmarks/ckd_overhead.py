"""Overhead of CKD (counterfactual distillation from uni-modal teachers) on a training epoch, beside the plain
backbone, and where it goes.

Usage (from the repository root):  python benchmarks/ckd_overhead.py [--models vbpr mmgcn grcn] [--reps N]
                                       [--threads T]

On the bundled `scientific`, each backbone is built as `experiment.api.train_one` builds it (the YAML
defaults, CKD's defaults) and timed through the real trainer (`Trainer._train_epoch`): one epoch of the plain
model and of the model + CKD (median of `--reps` epochs after one warm-up epoch). The teachers are trained for
one epoch only (their weights do not change the student's cost). Beside them, per batch, the floor of what
CKD adds by its definition: one forward and backward of each uni-modal counterfactual view (the student's
own `counterfactual` pass, M of them), i.e. plain epoch x (1 + M x view share); the ratio CKD / floor says
what the rest of the distiller (teacher margins, generic triples, re-weighting) costs. One thread by default;
the load average is printed, since ratios on a loaded machine are noisier. The last line is one JSON object.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch
from cdl_overhead import epochs, overhead_main  # this folder is on sys.path when run

from distillrec.data.dataset import Dataset
from distillrec.distill.registry import build_distiller
from distillrec.experiment.spec import groups_of, resolve_spec
from distillrec.models.registry import build_model
from distillrec.training.trainer import Trainer, seed_everything


def view_seconds(trainer: Trainer, reps: int) -> float:
    """Median seconds, over one epoch's batches, of the student's counterfactual views: each modality's
    forward and a backward of the sum of its item vectors (the work CKD's definition adds per batch)."""
    model, features = trainer.model, trainer.features
    n_batches = sum(1 for _ in trainer.task.batches(torch.Generator().manual_seed(0)))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(n_batches):
            total = sum(model.counterfactual(features, m).item.sum() for m in features)
            total.backward()
        times.append(time.perf_counter() - t0)
        model.zero_grad(set_to_none=True)
    return statistics.median(times)


def bench(model: str, ds: Dataset, reps: int) -> dict[str, Any]:
    spec = resolve_spec(model, ds.name, {}, distill="ckd")
    cfg, dev = spec.train_config(), torch.device("cpu")
    groups = groups_of(spec)
    groups["train"] = {**groups["train"], "epochs": 1}  # teachers: one epoch is enough to time the student

    seed_everything(spec.seed)
    plain = Trainer(build_model(spec.model, ds, spec.params), ds, cfg, None, device=dev, quiet=True)
    plain_epoch = epochs(plain, reps)
    views = view_seconds(plain, reps)

    seed_everything(spec.seed)
    net = build_model(spec.model, ds, spec.params)
    distiller = build_distiller(
        ["ckd"],
        ds,
        spec.model,
        groups,
        dev,
        None,
        backbone_factory=lambda: build_model(spec.model, ds, spec.params),
        seed=spec.seed,
    )
    ckd = Trainer(net, ds, cfg, None, distiller=distiller, device=dev, quiet=True)
    ckd_epoch = epochs(ckd, reps)
    floor = plain_epoch + views
    return {
        "modalities": len(ds.features),
        "plain_epoch_s": round(plain_epoch, 3),
        "views_s": round(views, 3),
        "floor_s": round(floor, 3),
        "ckd_epoch_s": round(ckd_epoch, 3),
        "ckd_over_plain": round(ckd_epoch / plain_epoch, 2),
        "ckd_over_floor": round(ckd_epoch / floor, 2),
    }


def main() -> None:
    overhead_main(__doc__, ["vbpr", "mmgcn", "grcn"], bench)


if __name__ == "__main__":
    main()
