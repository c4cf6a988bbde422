"""Premise variants of a real dataset: the same folder with one premise of a distillation method made to hold
(or removed) in a controlled way, written as an ordinary dataset folder with a SOURCE.md saying how.

Kinds (`write_variant(kind, source, out, **params)`):

* `noise` (CKD: imbalanced modalities): one modality's features plus seeded Gaussian noise at a given
  SNR, SNR_dB = 10 log10(Σ x² / Σ n²) over the whole matrix (noise variance = mean(x²) / 10^(SNR/10)).
  Lower SNR, weaker modality: the model leans on the other one while a uni-modal teacher still gets what
  signal is left.
* `lowrank` (CKD): one modality projected on its top-`rank` principal directions (centred: x̄ + (x − x̄)
  V_r V_rᵀ); deterministic (exact SVD), so `seed` is recorded but changes nothing.
* `no-category-text` (SGFD: semantics missing from the features): the text re-embedded from the raw item
  text of `items.tsv` without its category path, with the same encoder (the bundled all-MiniLM-L6-v2, L2
  normalised, batch 64: how the source's text_feat.npy was made), through `distillrec.features`, computed
  in float64 under pinned CPU kernels and rounded to float32 so that every machine writes the same file. In
  scientific's text "title. Industrial & Scientific <category path>. brand." the part removed is from
  "Industrial & Scientific " to the next ". " (44 items have an empty path, ". ."); the labels stay.
* `drop` (SGFD: image only, with `modality="text"`): one modality's feature file left out.

Forgetting-prone data (CDL) is not a data transformation here: the KDSR paper's forgetting is that of
modality item tables drifting from the features' structure under the next-item objective, which depends on
how far training moves those tables relative to their initial scale. It is provided as a training setting
of the backbones (`modality_init_scale` < 1: the tables start smaller, so the same updates move them
further from the features' structure; see experiments/diagnose-cdl.yaml), not as a dataset.

The folder: every top-level file of the source copied (not the `raw/` folder), the interaction files
renamed `<out name>.inter` / `<out name>.seq.inter` so that the variant is its own dataset name (an
experiment keeps its runs apart from the source's), the changed feature file written, and SOURCE.md
with the call, the source, the parameters and the SHA-256 of every file. Written into `<out>.partial` and
renamed at the end: an interrupted call leaves no folder that looks finished.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from distillrec._version import __version__
from distillrec.data.formats.arrays import discover_modalities, load_feature
from distillrec.data.registry import known_datasets
from distillrec.errors import ConfigError, DataError
from distillrec.features import build_text_features

KINDS = ("noise", "lowrank", "no-category-text", "drop")
CATEGORY_MARK = "Industrial & Scientific "


@dataclass
class VariantResult:
    """What `write_variant` wrote: the folder, its kind and parameters, and each file's SHA-256."""

    path: Path
    kind: str
    params: dict[str, Any]
    written: list[str] = field(default_factory=list)  # files changed or created (the rest are copies)
    sha256: dict[str, str] = field(default_factory=dict)


# --------------------------------------------------------------------------- the transformations
def add_noise(x: np.ndarray, snr_db: float, seed: int) -> np.ndarray:
    """x plus Gaussian noise of power mean(x²) / 10^(snr_db/10), drawn from numpy's PCG64 seeded `seed`."""
    power = float(np.mean(x.astype(np.float64) ** 2)) / 10 ** (snr_db / 10)
    noise = np.random.default_rng(seed).normal(0.0, np.sqrt(power), size=x.shape)
    return (x + noise).astype(np.float32)


def snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    """10 log10(Σ clean² / Σ (noisy − clean)²), the SNR `add_noise` aims at."""
    c = clean.astype(np.float64)
    return float(10 * np.log10(np.sum(c**2) / np.sum((noisy.astype(np.float64) - c) ** 2)))


def low_rank(x: np.ndarray, rank: int) -> np.ndarray:
    """x projected on its top-`rank` principal directions (the centred matrix's right singular vectors)."""
    if not 1 <= rank <= min(x.shape):
        raise ConfigError(f"rank must be between 1 and {min(x.shape)} for a {x.shape[0]}x{x.shape[1]} matrix")
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(x64 - mean, full_matrices=False)
    v = vt[:rank].T
    return (mean + (x64 - mean) @ v @ v.T).astype(np.float32)


def strip_category_path(text: str) -> str:
    """ "title. Industrial & Scientific <path>. brand." -> "title. brand." (an empty path ". ." too)."""
    mark = ". " + CATEGORY_MARK
    k = text.find(mark)
    if k >= 0:
        rest = text[k + len(mark) :]
        end = rest.find(". ")
        brand = rest[end + 2 :] if end >= 0 else ""
        return f"{text[:k]}. {brand}".rstrip() if brand else text[:k] + "."
    return text.replace(". . ", ". ", 1)


# --------------------------------------------------------------------------- the folder
def resolve_source(source: Path | str) -> Path:
    """A dataset folder, given as a path or as a name the registry knows (bundled or shared)."""
    path = Path(source)
    if path.is_dir():
        return path.resolve()
    entry = known_datasets().get(str(source).lower())
    if entry is None:
        raise DataError(f"--source {source}: no such folder and no known dataset of that name")
    if entry.path is None:  # the bundled copy inside the package
        return Path(str(resources.files("distillrec") / "datasets" / str(entry.builtin)))
    return entry.path


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _copy_source(src: Path, dst: Path, skip: set[str]) -> None:
    """Every top-level file of `src` into `dst`, the interaction files renamed after `dst`'s final name."""
    name = dst.name.removesuffix(".partial")
    inters = [p for p in src.glob("*.inter") if not p.name.endswith(".seq.inter")]
    stem = inters[0].name[: -len(".inter")] if len(inters) == 1 else None
    for p in sorted(src.iterdir()):
        if not p.is_file() or p.name in skip or p.name == "SOURCE.md":
            continue
        target = p.name
        if stem is not None and p.name in (f"{stem}.inter", f"{stem}.seq.inter"):
            target = name + p.name[len(stem) :]
        shutil.copyfile(p, dst / target)


def _modality_file(src: Path, modality: str) -> Path:
    files = discover_modalities(src)
    if modality not in files:
        raise DataError(f"{src}: no {modality}_feat.npy (modalities: {', '.join(files) or 'none'})")
    return files[modality]


def _degrade(src: Path, dst: Path, modality: str, fn: Callable[[np.ndarray], np.ndarray]) -> list[str]:
    x = load_feature(_modality_file(src, modality))
    name = f"{modality}_feat.npy"
    np.save(dst / name, fn(x), allow_pickle=False)
    return [name]


def _no_category_text(src: Path, dst: Path, params: dict[str, Any]) -> list[str]:
    items = src / "items.tsv"
    if not items.is_file():
        raise DataError(
            f"{src}: no items.tsv (the raw item text); give the folder that holds it, e.g. "
            "../shared/datasets/amazon-scientific"
        )
    table = pd.read_csv(items, sep="\t", dtype=str, keep_default_na=False)
    table["text"] = table["text"].map(strip_category_path)
    text_file = dst / "items_nocategory.tsv"
    table[["itemID", "text"]].to_csv(text_file, sep="\t", index=False)
    build_text_features(
        dst,
        text_file,
        text_columns=["text"],
        modality=params.get("modality", "text"),
        model=params.get("model"),
        batch_size=64,
        normalize=True,
        device="cpu",
        force=True,
        precision="float64",  # the same file on any machine, so an experiment on it resumes anywhere
    )
    return [f"{params.get('modality', 'text')}_feat.npy", text_file.name]


def write_variant(
    kind: str, source: Path | str, out: Path | str, force: bool = False, **params: Any
) -> VariantResult:
    """Write the premise variant `kind` of the dataset `source` into the folder `out` (see the module
    docstring for the kinds and their parameters: noise: modality, snr_db, seed; lowrank: modality, rank;
    no-category-text: model (default the bundled MiniLM); drop: modality)."""
    if kind not in KINDS:
        raise ConfigError(f"unknown variant kind {kind!r}; known: {', '.join(KINDS)}")
    src = resolve_source(source)
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise DataError(f"{out} already exists and is not empty; force=True (--force) replaces it")
    params = _checked(kind, params)
    tmp = out.with_name(out.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    m = str(params.get("modality", ""))
    skip = {f"{m}_feat.npy"} if kind == "drop" else set()
    if kind == "drop" and m not in discover_modalities(src):
        raise DataError(f"{src}: no {m}_feat.npy to drop")
    _copy_source(src, tmp, skip)
    if kind == "noise":
        written = _degrade(src, tmp, m, lambda x: add_noise(x, params["snr_db"], params["seed"]))
    elif kind == "lowrank":
        written = _degrade(src, tmp, m, lambda x: low_rank(x, params["rank"]))
    elif kind == "no-category-text":
        written = _no_category_text(src, tmp, params)
    else:
        written = []
    hashes = {p.name: sha256(p) for p in sorted(tmp.iterdir()) if p.is_file()}
    result = VariantResult(out, kind, params, written, hashes)
    (tmp / "SOURCE.md").write_text(_source_md(result, src, skip))
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return result


def _checked(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    """The kind's parameters with their defaults; unknown or missing ones refused in one line."""
    defaults: dict[str, dict[str, Any]] = {
        "noise": {"modality": "image", "snr_db": None, "seed": 0},
        "lowrank": {"modality": "image", "rank": None, "seed": 0},
        "no-category-text": {"modality": "text", "model": None, "seed": 0},
        "drop": {"modality": "text", "seed": 0},
    }
    known = defaults[kind]
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ConfigError(f"variant {kind}: unknown parameter {unknown[0]!r}; known: {', '.join(known)}")
    merged = {**known, **params}
    needed = {"noise": "snr_db", "lowrank": "rank"}.get(kind)
    if needed and merged[needed] is None:
        raise ConfigError(f"variant {kind} needs {needed}")
    if kind == "noise":
        merged["snr_db"] = float(merged["snr_db"])
    if kind == "lowrank":
        merged["rank"] = int(merged["rank"])
    merged["seed"] = int(merged["seed"])
    return merged


def _source_md(result: VariantResult, src: Path, skipped: set[str]) -> str:
    name = result.path.name
    args = ", ".join(f"{k}={v!r}" for k, v in result.params.items() if v is not None)
    flags = " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in result.params.items() if v is not None and k != "seed"
    )
    lines = [
        f"# {name} — premise variant `{result.kind}` of {src.name}",
        "",
        "Derived by distillrec " + __version__ + " (`distillrec.diagnose.variants`); see that module's "
        "docstring for what the kind does.",
        "",
        f"- source folder: `{src}`",
        f"- kind: `{result.kind}`",
        "- parameters: " + ", ".join(f"`{k}` = {v!r}" for k, v in result.params.items()),
        f"- seed: {result.params.get('seed')}",
        f"- Python: `write_variant({result.kind!r}, {str(src)!r}, {str(result.path)!r}, {args})`",
        f"- command: `distillrec variant {result.kind} --source {src} --out {result.path} {flags}"
        f" --seed {result.params.get('seed')}`",
        f"- written here: {', '.join(result.written) or 'nothing (files copied or left out only)'}",
        f"- left out: {', '.join(sorted(skipped)) or 'nothing'} (and the source's `raw/` folder, SOURCE.md)",
        "- the interaction files are the source's, renamed to `"
        + name
        + ".inter` / `"
        + name
        + ".seq.inter`",
        "",
        "## sha256",
        "",
        "```",
        *[f"{h}  {f}" for f, h in result.sha256.items()],
        "```",
        "",
    ]
    return "\n".join(lines)


# The variants the premise experiments (experiments/diagnose-*.yaml) run on: folder name -> (kind, params).
PREMISE_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "scientific-image-snr10": ("noise", {"modality": "image", "snr_db": 10.0, "seed": 1}),
    "scientific-image-snr0": ("noise", {"modality": "image", "snr_db": 0.0, "seed": 1}),
    "scientific-image-snr-10": ("noise", {"modality": "image", "snr_db": -10.0, "seed": 1}),
    "scientific-image-rank2": ("lowrank", {"modality": "image", "rank": 2}),
    "scientific-text-nocategory": ("no-category-text", {}),
    "scientific-image-only": ("drop", {"modality": "text"}),
}
PREMISE_SOURCE = Path("..") / "shared" / "datasets" / "amazon-scientific"
PREMISE_ROOT = Path("runs") / "variants"


def write_premise_variants(
    source: Path | str = PREMISE_SOURCE, root: Path | str = PREMISE_ROOT, force: bool = False
) -> list[VariantResult]:
    """Every variant of PREMISE_VARIANTS under `root` (paths relative to the repository root, where the
    experiment definitions name them); a finished variant folder is kept unless `force`."""
    done = []
    for name, (kind, params) in PREMISE_VARIANTS.items():
        out = Path(root) / name
        if (out / "SOURCE.md").is_file() and not force:
            continue
        done.append(write_variant(kind, source, out, force=force, **params))
    return done
