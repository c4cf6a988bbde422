"""What the same-file-anywhere text features cost: float32, float64 and float64 under pinned kernels.

Usage (from the repository root):
    python benchmarks/text_precision.py [--data PATH] [--limit N] [--workers K] [--json]

The first N texts of `items.tsv` (default 400) are embedded by the bundled all-MiniLM-L6-v2 three ways,
in the same run: float32 in this process (the floor: what `--precision float32` does), float64 in this
process (unpinned: what an encoder object passed to `build_text_features` gets), and float64 in K child
processes with pinned kernels (`--precision float64`, the default; its time includes starting the
processes and loading the model in each). The in-process arms use K threads, the model loaded once and not
timed. Each row: seconds, the ratio to the floor, and how many float32 values differ from the pinned
result (the in-process float64 arm: values that round otherwise on this CPU's own kernels).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from distillrec.features.pinned import embed_pinned
from distillrec.features.text import arithmetic, embed_texts, load_text_model

DEFAULT_DATA = Path("..") / "shared" / "datasets" / "amazon-scientific"


def main() -> None:
    import torch

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="a dataset folder with items.tsv")
    ap.add_argument("--limit", type=int, default=400, help="first N texts")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="threads / processes")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    texts = pd.read_csv(args.data / "items.tsv", sep="\t", dtype=str, keep_default_na=False)["text"]
    texts = texts.head(args.limit).tolist()
    torch.set_num_threads(args.workers)
    encoder, name = load_text_model(None, "cpu")
    out: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}
    for arm, precision in (("float32", "float32"), ("float64", "float64")):
        start = time.perf_counter()
        with arithmetic(encoder, precision):
            out[arm] = embed_texts(encoder, texts, args.batch_size, True)
        seconds[arm] = time.perf_counter() - start
    start = time.perf_counter()
    out["float64 pinned"] = embed_pinned(None, texts, args.batch_size, True, workers=args.workers)
    seconds["float64 pinned"] = time.perf_counter() - start
    pinned = out["float64 pinned"]
    rows = [
        {
            "arm": arm,
            "seconds": seconds[arm],
            "ratio": seconds[arm] / seconds["float32"],
            "values_unlike_pinned": int((out[arm] != pinned).sum()),
            "max_abs_diff": float(np.abs(out[arm] - pinned).max()),
        }
        for arm in out
    ]
    info = {
        "model": name,
        "texts": len(texts),
        "values": int(pinned.size),
        "workers": args.workers,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "rows": rows,
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return
    print(
        f"{name}: {len(texts)} texts ({pinned.size} values), {args.workers} threads / processes, "
        f"this CPU's kernels: {info['cpu_capability']}"
    )
    header = f"{'arm':<16} {'seconds':>8} {'x float32':>10} {'values unlike pinned':>21} {'max |diff|':>11}"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['arm']:<16} {r['seconds']:>8.1f} {r['ratio']:>10.1f} {r['values_unlike_pinned']:>21} "
            f"{r['max_abs_diff']:>11.2e}"
        )


if __name__ == "__main__":
    main()
