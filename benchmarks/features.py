"""Re-embed the item text of `amazon-scientific` with `distillrec features` and compare with the shipped file.

Usage (from the repository root):
    python benchmarks/features.py [--data PATH] [--limit N] [--device D] [--json]

The shipped `text_feat.npy` is the L2-normalised all-MiniLM-L6-v2 embedding of the `text` column of
`items.tsv` (SOURCE.md), the same encoder `distillrec features` bundles. That column is already the
concatenation the upstream preprocessing made (UniSRec's "title. category path. brand."; there are no
separate fields to join). Two inputs are embedded into a scratch copy of the dataset folder:
- `items.tsv`, ids by `itemID` (the dataset's own indices);
- `raw/Scientific.text`, the upstream RecBole file, sorted by ASIN and with trailing blanks, ids by
  `item_id:token` (ASINs, mapped through `i_id_mapping.csv`).
Each row of the table: items, seconds (the embedding; the model is loaded once, timed apart), the
mean and minimum cosine of row i with the shipped row i, the largest absolute difference, and how many
rows are bit-identical. `--limit N` uses the first N items only (a sliced copy of the dataset).
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from distillrec.features import build_text_features, load_text_model
from distillrec.features.runtime import resolve_device

DEFAULT_DATA = Path("..") / "shared" / "datasets" / "amazon-scientific"
SOURCES = (  # (label, file inside the dataset folder, id column, text column)
    ("items.tsv by itemID", "items.tsv", "itemID", "text"),
    ("raw/Scientific.text by ASIN", "raw/Scientific.text", "item_id:token", "text:token_seq"),
)


def _tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, quoting=3)


def slice_dataset(src: Path, dst: Path, limit: int | None) -> int:
    """A copy of the dataset folder without its text features, restricted to items < limit; the text
    inputs are restricted the same way (an item outside the slice would be an unknown id)."""
    dst.mkdir(parents=True, exist_ok=True)
    id_map = _tsv(src / "i_id_mapping.csv")
    n = len(id_map) if limit is None else min(limit, len(id_map))
    keep_ids = set(id_map.loc[id_map["itemID"].astype(int) < n, "asin"])
    inter = _tsv(src / "scientific.inter")
    inter[inter["itemID"].astype(int) < n].to_csv(dst / "scientific.inter", sep="\t", index=False)
    id_map[id_map["itemID"].astype(int) < n].to_csv(dst / "i_id_mapping.csv", sep="\t", index=False)
    np.save(dst / "image_feat.npy", np.load(src / "image_feat.npy")[:n])
    items = _tsv(src / "items.tsv")
    items[items["itemID"].astype(int) < n].to_csv(dst / "items.tsv", sep="\t", index=False)
    (dst / "raw").mkdir(exist_ok=True)
    raw = _tsv(src / "raw" / "Scientific.text")
    raw[raw["item_id:token"].isin(keep_ids)].to_csv(dst / "raw" / "Scientific.text", sep="\t", index=False)
    return n


def compare(a: np.ndarray, b: np.ndarray) -> dict:
    """Cosine of matching rows, largest absolute difference, bit-identical rows."""
    cos = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {
        "mean_cosine": float(cos.mean()),
        "min_cosine": float(cos.min()),
        "max_abs_diff": float(np.abs(a - b).max()),
        "identical_rows": int((a == b).all(1).sum()),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the amazon-scientific folder")
    ap.add_argument("--limit", type=int, default=None, help="first N items only")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    shipped = np.load(args.data / "text_feat.npy")
    device = resolve_device(args.device)
    start = time.perf_counter()
    encoder, name = load_text_model(None, device)
    load_s = time.perf_counter() - start
    rows = []
    with tempfile.TemporaryDirectory(prefix="distillrec-features-") as tmp:
        folder = Path(tmp) / "scientific"
        n = slice_dataset(args.data, folder, args.limit)
        for label, file, id_column, text_column in SOURCES:
            result = build_text_features(
                folder,
                folder / file,
                id_column=id_column,
                text_columns=[text_column],
                model=encoder,
                batch_size=args.batch_size,
                force=True,
            )
            rows.append(
                {
                    "input": label,
                    "items": n,
                    "seconds": result.seconds,
                    **compare(np.load(result.path), shipped[:n]),
                }
            )
        shutil.rmtree(folder)
    info = {
        "model": name,
        "device": device,
        "load_seconds": load_s,
        "batch_size": args.batch_size,
        "rows": rows,
    }
    if args.json:
        print(json.dumps(info, indent=2))
        return
    print(f"{name} on {device}, loaded in {load_s:.1f} s, batch size {args.batch_size}")
    print(f"compared with {args.data / 'text_feat.npy'}, row by row")
    widths = {
        "input": -30,
        "items": 6,
        "seconds": 8,
        "mean cos": 10,
        "min cos": 10,
        "max |diff|": 11,
        "identical": 10,
    }
    header = " ".join(f"{k:<{-w}}" if w < 0 else f"{k:>{w}}" for k, w in widths.items())
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['input']:<30} {r['items']:>6} {r['seconds']:>8.1f} {r['mean_cosine']:>10.7f} "
            f"{r['min_cosine']:>10.7f} {r['max_abs_diff']:>11.2e} {r['identical_rows']:>10}"
        )


if __name__ == "__main__":
    main()
