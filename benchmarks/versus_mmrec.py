"""Whole runs beside the MMRec toolbox: the same model, data files, epochs and hyperparameters, one thread each.

Usage (from the repository root, with a checkout of https://github.com/enoche/MMRec at PATH):
    python benchmarks/versus_mmrec.py --mmrec PATH [--models lightgcn,vbpr,freedom,lattice,mgcn]
                                      [--dataset scientific] [--epochs 100] [--reps 1] [--json]

Each repetition runs, alternately, MMRec's `quick_start` and `distillrec train` in fresh interpreters
(`OMP_NUM_THREADS=1`, `torch.set_num_threads(1)`), each for exactly `--epochs` epochs (no early stop) with an
evaluation every epoch, as both do by default (MMRec scores valid and test each epoch; distillrec valid each
epoch and test once at the best epoch). The wall time is from the interpreter's start to its exit, so start-up,
loading, graph building, training, every evaluation and writing results all count. Reported per model: both
walls (medians), the ratio MMRec / distillrec, and both test Recall@20 at the best validation epoch, so a
speed-up that changed the answer would show.

Hyperparameters: every grid that MMRec's model YAML declares (`hyper_parameters`) is pinned to distillrec's
default of the same name where distillrec has one (MMRec's `learning_rate` is distillrec's `lr`), else to
MMRec's first grid value; other settings are each toolbox's own defaults. MMRec runs from a temporary copy of
its `src` folder with the dataset's files linked in. Compatibility shims let MMRec's 2022 code run on today's
libraries without changing its work: `torchvision` and `lmdb` are stubbed (imported at module level for its
end-to-end raw-image mode, unused here), `np.float` is `float`, SciPy's removed `dok_matrix._update` is the
same dictionary update, and `torch_scatter.scatter_add` (a compiled extension MMRec's kNN graph normalisation
imports) is the same sum by `Tensor.index_add_`; without a GPU, `Tensor.cuda()` (hard-coded in its LATTICE)
returns the tensor where it is.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from startup import child_env  # this folder is on sys.path when run: one thread per child, as there

MMREC_NAMES = {
    "lightgcn": "LightGCN",
    "vbpr": "VBPR",
    "freedom": "FREEDOM",
    "lattice": "LATTICE",
    "mgcn": "MGCN",
}

MMREC_RUNNER = """
import sys, time, types, json
t0 = time.perf_counter()
model, dataset, overrides = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
sys.argv = sys.argv[:1]
for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional", "lmdb"):
    stub = types.ModuleType(name)
    stub.__getattr__ = lambda attr: None
    sys.modules[name] = stub
import numpy as np
import scipy.sparse as sp
import torch
torch.set_num_threads(1)
np.float = float
def scatter_add(src, index, dim=0, out=None, dim_size=None):
    size = list(src.shape)
    size[dim] = dim_size if dim_size is not None else int(index.max()) + 1
    return torch.zeros(size, dtype=src.dtype, device=src.device).index_add_(dim, index, src)
sys.modules["torch_scatter"] = types.SimpleNamespace(scatter_add=scatter_add)
if not torch.cuda.is_available():
    torch.Tensor.cuda = lambda self, *args, **kwargs: self
if not hasattr(sp.dok_matrix, "_update"):
    sp.dok_matrix._update = lambda self, entries: self._dict.update(entries)
from utils.quick_start import quick_start
quick_start(model=model, dataset=dataset, config_dict=overrides, save_model=False)
print("WALL", time.perf_counter() - t0)
"""


def dataset_files(dataset: str) -> tuple[Path, str]:
    """The dataset's folder and the stem of its interaction file (MMRec's layout: STEM.inter + *_feat.npy)."""
    from distillrec.data.registry import load_dataset

    source = Path(load_dataset(dataset).source)
    inter = (
        source
        if source.suffix == ".inter"
        else next(p for p in source.glob("*.inter") if ".seq." not in p.name)
    )
    return inter.parent, inter.stem


def pinned_hyperparameters(mmrec_src: Path, model: str) -> dict[str, Any]:
    """MMRec's grid keys for `model`, each pinned to distillrec's default of that name (else MMRec's first)."""
    from distillrec.models.registry import resolve_params
    from distillrec.training.defaults import resolve_train_config

    spec = yaml.safe_load((mmrec_src / "configs" / "model" / f"{MMREC_NAMES[model]}.yaml").read_text()) or {}
    ours = resolve_params(model, {}).model_dump()
    ours["learning_rate"] = resolve_train_config(model, {}).lr
    pinned = {}
    for key in spec.get("hyper_parameters", []):
        grid = spec[key] if isinstance(spec[key], list) else [spec[key]]
        pinned[key] = [ours[key] if key in ours else grid[0]]
    return pinned


def run_mmrec(work: Path, model: str, dataset: str, epochs: int, pinned: dict[str, Any]) -> dict[str, float]:
    overrides = {
        "use_gpu": False,
        "gpu_id": 0,
        "epochs": epochs,
        "stopping_step": 10**6,
        "seed": [999],
        "data_path": str(work / "data") + "/",
        **pinned,
    }
    cmd = [sys.executable, "-c", MMREC_RUNNER, MMREC_NAMES[model], dataset, json.dumps(overrides)]
    t0 = time.perf_counter()
    done = subprocess.run(
        cmd,
        cwd=work / "src",
        capture_output=True,
        text=True,
        env={**child_env(), "PYTHONPATH": str(work / "src")},
    )
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"MMRec {model} failed:\n{done.stderr[-2000:]}")
    log = done.stdout + done.stderr
    best = log[log.rfind("BEST") :]
    match = re.search(r"Test:.*?recall@20: ([0-9.]+)", best)
    return {"wall_s": wall, "test_recall@20": float(match.group(1)) if match else float("nan")}


def run_ours(model: str, dataset: str, epochs: int, pinned: dict[str, Any]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as out:
        cmd = [
            sys.executable,
            "-c",
            "from distillrec.cli import main; main()",
            "train",
            "-m",
            model,
            "-d",
            dataset,
        ]
        cmd += ["--set", f"epochs={epochs}", "--set", f"patience={epochs + 1}", "--out", out, "--quiet"]
        t0 = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=child_env())
        wall = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"distillrec {model} failed:\n{done.stderr[-2000:]}")
        (metrics,) = Path(out).rglob("metrics.json")
        test = json.loads(metrics.read_text())["test"]
    return {"wall_s": wall, "test_recall@20": float(test["recall@20"])}


def prepare_mmrec(mmrec: Path, work: Path, dataset: str) -> None:
    """A copy of MMRec's src with a dataset config, and the dataset's files linked under work/data/NAME."""
    shutil.copytree(mmrec / "src", work / "src", ignore=shutil.ignore_patterns("log", "saved", "__pycache__"))
    folder, stem = dataset_files(dataset)
    data = work / "data" / dataset
    data.mkdir(parents=True)
    (data / f"{dataset}.inter").symlink_to(folder / f"{stem}.inter")
    for feat in ("image_feat.npy", "text_feat.npy"):
        (data / feat).symlink_to(folder / feat)
    config = {
        "USER_ID_FIELD": "userID",
        "ITEM_ID_FIELD": "itemID",
        "TIME_FIELD": "timestamp",
        "filter_out_cod_start_users": True,
        "inter_file_name": f"{dataset}.inter",
        "vision_feature_file": "image_feat.npy",
        "text_feature_file": "text_feat.npy",
        "user_graph_dict_file": "user_graph_dict.npy",
        "field_separator": "\t",
    }
    (work / "src" / "configs" / "dataset" / f"{dataset}.yaml").write_text(yaml.safe_dump(config))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mmrec", type=Path, required=True, help="a checkout of MMRec (the folder holding src/)")
    ap.add_argument("--models", default=",".join(MMREC_NAMES))
    ap.add_argument("--dataset", default="scientific")
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(models) - set(MMREC_NAMES))
    if unknown:
        raise SystemExit(f"no MMRec counterpart for {unknown}; choose from {sorted(MMREC_NAMES)}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prepare_mmrec(args.mmrec.resolve(), work, args.dataset)
        for model in models:
            pinned = pinned_hyperparameters(work / "src", model)
            theirs, ours = [], []
            for _ in range(args.reps):
                theirs.append(run_mmrec(work, model, args.dataset, args.epochs, pinned))
                ours.append(run_ours(model, args.dataset, args.epochs, pinned))
            row = {
                "model": model,
                "pinned": {k: v[0] for k, v in pinned.items()},
                "mmrec_wall_s": round(statistics.median(r["wall_s"] for r in theirs), 2),
                "distillrec_wall_s": round(statistics.median(r["wall_s"] for r in ours), 2),
                "mmrec_test_recall@20": theirs[-1]["test_recall@20"],
                "distillrec_test_recall@20": round(ours[-1]["test_recall@20"], 4),
            }
            row["ratio"] = round(row["mmrec_wall_s"] / row["distillrec_wall_s"], 2)
            rows.append(row)
            if not args.json:
                print(
                    f"{model:<9} MMRec {row['mmrec_wall_s']:>7.1f} s   distillrec {row['distillrec_wall_s']:>6.1f} s"
                    f"   {row['ratio']:>5.2f}x   test R@20 {row['mmrec_test_recall@20']:.4f} / "
                    f"{row['distillrec_test_recall@20']:.4f}   pinned {row['pinned']}",
                    flush=True,
                )
    print(
        json.dumps(
            {
                "benchmark": "versus_mmrec",
                "dataset": args.dataset,
                "epochs": args.epochs,
                "reps": args.reps,
                "rows": rows,
            }
        )
    )


if __name__ == "__main__":
    main()
