"""Overhead of KDSR's correlation distillation (CDL) on a next-item epoch, beside the plain backbone.

Usage (from the repository root):  python benchmarks/cdl_overhead.py [--models gru4rec sasrec] [--reps N]

On the bundled `scientific`, each backbone is built with `modality_input: true` (KDSR's Fig. 3 input, as
experiments/kdsr.yaml runs it) exactly as `experiment.api.train_one` builds it, and timed through the real
trainer (`Trainer._train_epoch`, which includes CDL's per-epoch forgetting probe): one training epoch of the
plain model and of the model + CDL (median of `--reps` epochs after one warm-up epoch), CDL's one-off setup
(`build_distiller`: teacher codes, pair sampling, codebooks, probe) and one validation evaluation. The probe
is also timed on its own. Runs on one thread (`torch.set_num_threads(1)`) so that a background job disturbs
it less; the load average is printed, since ratios on a loaded machine are noisier than on an idle one.
The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from distillrec.data.registry import load_dataset
from distillrec.distill.registry import build_distiller
from distillrec.experiment.spec import groups_of, resolve_spec
from distillrec.models.registry import build_model
from distillrec.training.trainer import Trainer, seed_everything


def timed(fn) -> tuple[float, object]:  # noqa: ANN001
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def epochs(trainer: Trainer, reps: int) -> float:
    """Median seconds of `reps` training epochs after one warm-up epoch."""
    trainer._train_epoch(1)
    return statistics.median(timed(lambda e=e: trainer._train_epoch(e))[0] for e in range(2, reps + 2))


def bench(model: str, ds, reps: int) -> dict[str, float]:  # noqa: ANN001
    spec = resolve_spec(model, ds.name, {"modality_input": True}, distill="cdl")
    cfg, dev = spec.train_config(), torch.device("cpu")

    seed_everything(spec.seed)
    plain = Trainer(build_model(spec.model, ds, spec.params), ds, cfg, None, device=dev, quiet=True)
    plain_epoch = epochs(plain, reps)
    plain_eval = statistics.median(timed(lambda: plain.evaluate("valid"))[0] for _ in range(3))

    seed_everything(spec.seed)
    net = build_model(spec.model, ds, spec.params)
    setup, distiller = timed(
        lambda: build_distiller(
            ["cdl"],
            ds,
            spec.model,
            groups_of(spec),
            dev,
            None,
            backbone_factory=lambda: build_model(spec.model, ds, spec.params),
            seed=spec.seed,
        )
    )
    cdl = Trainer(net, ds, cfg, None, distiller=distiller, device=dev, quiet=True)
    cdl_epoch = epochs(cdl, reps)
    cdl_eval = statistics.median(timed(lambda: cdl.evaluate("valid"))[0] for _ in range(3))
    probe = statistics.median(timed(lambda: distiller.on_epoch_end(cdl.model, 1))[0] for _ in range(3))
    return {
        "plain_epoch_s": round(plain_epoch, 3),
        "cdl_epoch_s": round(cdl_epoch, 3),
        "epoch_ratio": round(cdl_epoch / plain_epoch, 3),
        "cdl_setup_s": round(setup, 3),
        "plain_eval_s": round(plain_eval, 3),
        "cdl_eval_s": round(cdl_eval, 3),
        "cdl_probe_s": round(probe, 3),
    }


def overhead_main(doc: str, default_models: list[str], bench_one) -> None:  # noqa: ANN001
    """Shared by the distillation-overhead benchmarks: options, one `bench_one(model, ds, reps)` per model on
    `scientific`, a table with the load average, and the JSON line."""
    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=default_models)
    ap.add_argument("--reps", type=int, default=3, help="timed epochs per arm (median)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ds = load_dataset("scientific")
    load = os.getloadavg()
    results = {m: bench_one(m, ds, args.reps) for m in args.models}
    cols = list(next(iter(results.values())))
    print(
        f"scientific, {args.threads} thread(s), load average before {load[0]:.2f}, after {os.getloadavg()[0]:.2f}"
    )
    print(f"{'model':10}" + "".join(f"{c:>16}" for c in cols))
    for m, r in results.items():
        print(f"{m:10}" + "".join(f"{r[c]!s:>16}" for c in cols))
    print(json.dumps({"threads": args.threads, "loadavg": round(load[0], 2), "results": results}))


def main() -> None:
    overhead_main(__doc__, ["gru4rec", "sasrec"], bench)


if __name__ == "__main__":
    main()
