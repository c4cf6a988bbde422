"""Fuzzing the dataset readers: a valid small folder of each layout (MMRec with id maps, MMRec with a
`.seq.inter`, RecBole with string tokens, RecBole with integer items and features, RecBole's pre-split
benchmark files, SGFD), corrupted at random, must either load as a sane Dataset or be refused with a
DistillrecError, never another exception, and never with an absurd allocation (sparse ids like 10**12 are
refused before anything is sized by them).

Deterministic (`derandomize=True`, no example database), so that CI sees the same examples every run.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from distillrec.data.dataset import Dataset
from distillrec.data.registry import load_dataset
from distillrec.errors import DistillrecError
from tests.conftest import make_dataset, write_mmrec

PEAK_BYTES = 64 * 2**20  # traced (numpy and Python) memory one load may use; the folders are a few KB
LARGEST = 100_000  # users, items or labels a fuzzed folder may declare (it holds a few dozen)

# ---------------------------------------------------------------------------------------------- valid folders


def _tsv(path: Path, header: list[str], rows: list) -> None:
    path.write_text("\n".join(["\t".join(header)] + ["\t".join(str(c) for c in r) for r in rows]) + "\n")


def _mmrec(folder: Path) -> None:
    ds = make_dataset(n_users=12, n_items=15, per_user=5, modalities={"image": 4, "text": 3}, n_labels=3)
    write_mmrec(ds, folder)
    _tsv(folder / "u_id_mapping.csv", ["user_id", "userID"], [(f"U{u}", u) for u in range(12)])
    _tsv(folder / "i_id_mapping.csv", ["asin", "itemID"], [(f"A{i}", i) for i in range(15)])


def _histories(n_users: int = 10, n_items: int = 12, seed: int = 1) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, n_items, int(rng.integers(5, 8))).tolist() for _ in range(n_users)]


def _mmrec_seq(folder: Path) -> None:
    folder.mkdir(parents=True)
    events, pairs, seen = [], [], set()
    for u, hist in enumerate(_histories()):
        for p, i in enumerate(hist):
            label = 0 if p < len(hist) - 2 else p - len(hist) + 3
            events.append((u, i, label, p))
            if (u, i) not in seen:
                seen.add((u, i))
                pairs.append((u, i, label))
    _tsv(folder / "syn.seq.inter", ["userID", "itemID", "x_label", "position"], events)
    _tsv(folder / "syn.inter", ["userID", "itemID", "x_label"], pairs)
    rng = np.random.default_rng(2)
    np.save(folder / "image_feat.npy", rng.random((12, 4), dtype=np.float32))
    np.save(folder / "text_feat.npy", rng.random((12, 3), dtype=np.float32))


def _recbole(folder: Path) -> None:
    folder.mkdir(parents=True)
    rows = [
        (f"u{u}", f"i{i}", 1 + (u + i) % 5, 100 * u + t)
        for u, hist in enumerate(_histories(8))
        for t, i in enumerate(hist)
    ]
    _tsv(folder / "rb.inter", ["user_id:token", "item_id:token", "rating:float", "timestamp:float"], rows)


def _recbole_features(folder: Path) -> None:
    folder.mkdir(parents=True)
    rows = [(u, i, 100 * u + t) for u, hist in enumerate(_histories(8, seed=3)) for t, i in enumerate(hist)]
    _tsv(folder / "rbf.inter", ["user_id:token", "item_id:token", "timestamp:float"], rows)
    rng = np.random.default_rng(4)
    np.save(folder / "image_feat.npy", rng.standard_normal((12, 5)).astype(np.float32))
    np.save(folder / "text_feat.npy", rng.standard_normal((12, 2)).astype(np.float32))
    np.save(folder / "category_label.npy", rng.integers(-1, 4, 12))


def _recbole_pre_split(folder: Path) -> None:
    folder.mkdir(parents=True)
    header = ["user_id:token", "item_id_list:token_seq", "item_id:token"]
    parts: dict[str, list] = {"train": [], "valid": [], "test": []}
    for u, hist in enumerate(_histories(8, seed=5)):
        n = len(hist)
        for k in range(1, n):
            part = "train" if k < n - 2 else ("valid" if k == n - 2 else "test")
            parts[part].append((f"u{u}", " ".join(f"i{i}" for i in hist[:k]), f"i{hist[k]}"))
    for part, rows in parts.items():
        _tsv(folder / f"rs.{part}.inter", header, rows)


def _sgfd(folder: Path) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(6)
    pairs = [(u, int(i)) for u in range(9) for i in rng.choice(12, size=5, replace=False)]
    for name, test in (("train.csv", False), ("test.csv", True)):  # each user: four train pairs, one test
        rows = [f"{i},{u},R{u},A{i}\n" for k, (u, i) in enumerate(pairs) if (k % 5 == 0) == test]
        (folder / name).write_text("itemID,userID,reviewerID,asin\n" + "".join(rows))
    np.save(folder / "FeatureImage_normal.npy", rng.random((14, 4)).astype(np.float32))  # extra rows: cut
    np.save(folder / "text_feat.npy", rng.random((14, 3)).astype(np.float32))
    np.save(folder / "MetaData_normal.npy", rng.integers(0, 3, 14))


BASES = {
    "mmrec": (
        _mmrec,
        [
            "synthetic.inter",
            "image_feat.npy",
            "text_feat.npy",
            "category_label.npy",
            "u_id_mapping.csv",
            "i_id_mapping.csv",
        ],
    ),
    "mmrec_seq": (_mmrec_seq, ["syn.seq.inter", "syn.inter", "image_feat.npy", "text_feat.npy"]),
    "recbole": (_recbole, ["rb.inter"]),
    "recbole_features": (
        _recbole_features,
        ["rbf.inter", "image_feat.npy", "text_feat.npy", "category_label.npy"],
    ),
    "recbole_pre_split": (_recbole_pre_split, ["rs.train.inter", "rs.valid.inter", "rs.test.inter"]),
    "sgfd": (
        _sgfd,
        ["train.csv", "test.csv", "FeatureImage_normal.npy", "text_feat.npy", "MetaData_normal.npy"],
    ),
}


@pytest.fixture(scope="module")
def bases(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fuzz-bases")
    out = {}
    for name, (make, files) in BASES.items():
        make(root / name)
        assert sorted(p.name for p in (root / name).iterdir()) == sorted(files), name
        out[name] = root / name
    return out


# ---------------------------------------------------------------------------------------------- corruptions


def _sep(name: str) -> str:
    return "," if name in ("train.csv", "test.csv", "valid.csv") else "\t"


def _at(frac: float, n: int) -> int:
    return min(n - 1, int(frac * n)) if n > 0 else 0


def _lines(path: Path) -> list[str]:
    return path.read_bytes().decode("utf-8", "surrogateescape").split("\n")


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_bytes("\n".join(lines).encode("utf-8", "surrogateescape"))


def _table_op(path: Path, op: tuple) -> None:
    kind, sep = op[0], _sep(path.name)
    lines = _lines(path)
    body = [k for k, line in enumerate(lines) if k > 0 and line]
    if kind == "cell":
        _, _, row, col, value = op
        k = body[_at(row, len(body))] if body and row < 0.9 else 0  # the header too, sometimes
        cells = lines[k].split(sep)
        cells[_at(col, len(cells))] = value
        lines[k] = sep.join(cells)
    elif kind in ("drop_column", "dup_column"):
        col = op[2]
        for k, line in enumerate(lines):
            if line:
                cells = line.split(sep)
                c = _at(col, len(cells))
                cells[c : c + 1] = [] if kind == "drop_column" else [cells[c], cells[c]]
                lines[k] = sep.join(cells)
    elif kind in ("drop_line", "dup_line", "blank_line") and body:
        k = body[_at(op[2], len(body))]
        new = {"drop_line": [], "dup_line": [lines[k], lines[k]], "blank_line": ["", lines[k]]}
        lines[k : k + 1] = new[kind]
    elif kind == "rename_header":
        cells = lines[0].split(sep)
        cells[_at(op[2], len(cells))] = op[3]
        lines[0] = sep.join(cells)
    elif kind == "crlf":
        lines = [line + "\r" if line else line for line in lines]
    _write_lines(path, lines)


def _corrupt_array(arr: np.ndarray, variant: tuple) -> np.ndarray:
    kind = variant[0]
    if kind == "rows":
        delta = variant[1]
        extra = arr[:1].repeat(max(delta, 0), 0)
        return arr[: max(0, len(arr) + delta)] if delta <= 0 else np.concatenate([arr, extra])
    if kind == "width" and arr.ndim == 2:
        w = variant[1]
        more = w - arr.shape[1]
        return arr[:, :w] if more <= 0 else np.concatenate([arr, arr[:, :1].repeat(more, 1)], 1)
    if kind in ("nonfinite", "value") and arr.size:
        arr = arr.astype(np.float64) if kind == "nonfinite" else arr.copy()
        arr.flat[_at(variant[1], arr.size)] = variant[2]
        return arr
    if kind == "dtype":
        dtype = variant[1]
        return np.array(arr.tolist(), dtype=object) if dtype == "object" else arr.astype(dtype)
    if kind == "shape":
        shapes = {
            "flat": lambda a: a.reshape(-1),
            "3d": lambda a: a[None],
            "scalar": lambda a: np.float32(2),
            "transpose": lambda a: a.T,
            "empty": lambda a: np.zeros((0,) + a.shape[1:], a.dtype),
        }
        return shapes[variant[1]](arr)
    return arr


def _npy_op(path: Path, variant: tuple) -> None:
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception:  # noqa: BLE001 - already damaged by an earlier corruption
        return
    if variant[0] == "claim":  # a header that claims more (or fewer) rows than the data that follows
        header = np.lib.format.header_data_from_array_1_0(arr)
        header["shape"] = (variant[1],) + tuple(arr.shape[1:])
        with path.open("wb") as fh:
            np.lib.format.write_array_header_1_0(fh, header)
            fh.write(arr.tobytes())
        return
    try:
        arr = _corrupt_array(arr, variant)
    except (IndexError, TypeError, ValueError, OverflowError):  # not applicable to what an earlier op left
        return
    with path.open("wb") as fh:
        np.save(fh, arr, allow_pickle=True)


def _bytes_op(path: Path, op: tuple) -> None:
    data = bytearray(path.read_bytes())
    kind = op[0]
    if kind == "truncate":
        data = data[: int(op[2] * len(data))]
    elif kind == "flip" and data:
        data[_at(op[2], len(data))] ^= op[3]
    elif kind == "insert":
        k = int(op[2] * len(data))
        data[k:k] = op[3]
    elif kind == "delete" and data:
        k = _at(op[2], len(data))
        del data[k : k + op[3]]
    elif kind == "empty":
        data = bytearray()
    path.write_bytes(bytes(data))


def _file_op(folder: Path, op: tuple) -> None:
    kind = op[0]
    if kind == "remove":
        (folder / op[1]).unlink(missing_ok=True)
    elif kind == "add_feature":  # another modality with its own number of rows
        np.save(folder / "audio_feat.npy", np.ones((op[1], 2), np.float32))
    elif kind == "copy_as":  # a stray second file: another .inter, a valid.csv, a second label file, …
        src = folder / op[1]
        if src.exists() and op[1] != op[2]:
            shutil.copy(src, folder / op[2])


def apply(folder: Path, ops: list[tuple]) -> None:
    for op in ops:
        kind = op[0]
        if kind in ("remove", "add_feature", "copy_as"):
            _file_op(folder, op)
            continue
        path = folder / op[1]
        if not path.exists():
            continue
        if kind == "npy":
            _npy_op(path, op[2])
        elif kind in ("truncate", "flip", "insert", "delete", "empty"):
            _bytes_op(path, op)
        elif path.suffix != ".npy":
            _table_op(path, op)


HUGE = [str(10**12), str(10**30), str(2**63), str(-(2**63) - 1), "9" * 40, "1e308", "1e400", "-1e400"]
ODD = [
    "",
    " ",
    "nan",
    "NaN",
    "inf",
    "-inf",
    "-1",
    "-7",
    "1.5",
    "0x1A",
    "abc",
    '"',
    '"a',
    "\t",
    ",",
    "\r",
    "\x00",
    "é",
    "1,2",
    "None",
    "null",
    "True",
    "1e3",
    "3.0",
    "+4",
    " 5 ",
    "\ufeff",
]


def cell_values() -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(HUGE + ODD),
        st.integers(-(10**20), 10**20).map(str),
        st.integers(-3, 40).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.text(max_size=6),
    )


def npy_variants() -> st.SearchStrategy[tuple]:
    fracs = st.floats(0, 1)
    return st.one_of(
        st.tuples(st.just("rows"), st.integers(-20, 4)),
        st.tuples(st.just("width"), st.integers(0, 6)),
        st.tuples(st.just("nonfinite"), fracs, st.sampled_from([math.nan, math.inf, -math.inf])),
        st.tuples(st.just("value"), fracs, st.sampled_from([1e38, -1e38, 10**12, -5, 2**62, 7])),
        st.tuples(
            st.just("dtype"),
            st.sampled_from(
                ["float16", "float64", "int8", "int64", "uint8", "bool", "complex64", "U3", "object"]
            ),
        ),
        st.tuples(st.just("shape"), st.sampled_from(["flat", "3d", "scalar", "transpose", "empty"])),
        st.tuples(st.just("claim"), st.sampled_from([0, 1, 11, 13, 10**6, 10**9, 10**12, 2**62])),
    )


def corruptions(files: list[str]) -> st.SearchStrategy[tuple]:
    tables = [f for f in files if not f.endswith(".npy")]
    arrays = [f for f in files if f.endswith(".npy")]
    fracs = st.floats(0, 1)
    any_file = st.sampled_from(files)
    options = [
        st.tuples(st.just("truncate"), any_file, fracs),
        st.tuples(st.just("flip"), any_file, fracs, st.integers(1, 255)),
        st.tuples(st.just("insert"), any_file, fracs, st.binary(min_size=1, max_size=6)),
        st.tuples(st.just("delete"), any_file, fracs, st.integers(1, 40)),
        st.tuples(st.just("empty"), any_file),
        st.tuples(st.just("remove"), any_file),
        st.tuples(st.just("add_feature"), st.integers(0, 20)),
        st.tuples(
            st.just("copy_as"),
            any_file,
            st.sampled_from(
                [
                    "extra.inter",
                    "valid.csv",
                    "category_label.npy",
                    "MetaData_normal.npy",
                    "image_feat.npy",
                    "syn.seq.inter",
                    "rb.seq.inter",
                    "rs.train.inter",
                    "x.train.inter",
                ]
            ),
        ),
    ]
    if tables:
        table = st.sampled_from(tables)
        options += [
            st.tuples(st.just("cell"), table, fracs, fracs, cell_values()),
            st.tuples(st.just("cell"), table, fracs, fracs, cell_values()),  # the commonest mistake: weight 2
            st.tuples(
                st.sampled_from(["drop_column", "dup_column", "drop_line", "dup_line", "blank_line"]),
                table,
                fracs,
            ),
            st.tuples(
                st.just("rename_header"),
                table,
                fracs,
                st.one_of(
                    st.sampled_from(
                        [
                            "userID",
                            "itemID",
                            "x_label",
                            "position",
                            "timestamp",
                            "user_id:token",
                            "item_id:token",
                            "timestamp:float",
                            "item_id_list:token_seq",
                            "user_id",
                            "rating:float",
                            "item_id:float",
                            "",
                        ]
                    ),
                    st.text(max_size=8),
                ),
            ),
            st.tuples(st.just("crlf"), table),
        ]
    if arrays:
        options.append(st.tuples(st.just("npy"), st.sampled_from(arrays), npy_variants()))
    return st.one_of(*options)


# ---------------------------------------------------------------------------------------------- the property


def check_sane(ds: Dataset) -> None:
    """What every consumer of a Dataset relies on; sizes bounded by the data (the folders are tiny), since
    models allocate by them."""
    assert 0 < ds.n_users < LARGEST and 0 < ds.n_items < LARGEST and ds.n_labels < LARGEST
    for mat in (ds.train, ds.valid, ds.test):
        assert mat.shape == (ds.n_users, ds.n_items) and mat.nnz > 0
        assert mat.indices.min() >= 0 and mat.indices.max() < ds.n_items
    for m, f in ds.features.items():
        assert f.ndim == 2 and f.shape[0] == ds.n_items and f.shape[1] > 0, m
        assert f.dtype.is_floating_point and bool(f.isfinite().all()), m
    if ds.labels is not None:
        assert ds.labels.shape == (ds.n_items,) and int(ds.labels.min()) >= -1
    seq = ds.sequences
    if seq is not None:
        assert len(seq.offsets) == ds.n_users + 1
        assert seq.offsets[0] == 0 and seq.offsets[-1] == len(seq.items)
        assert (np.diff(seq.offsets) >= 0).all() and len(seq.label) == len(seq.items)
        if len(seq.items):
            assert seq.items.min() >= 0 and seq.items.max() < ds.n_items
            assert set(np.unique(seq.label).tolist()) <= {0, 1, 2}
    for tokens, n in ((ds.user_tokens, ds.n_users), (ds.item_tokens, ds.n_items)):
        assert tokens is None or len(tokens) == n
    assert len(ds.split_hash) == 16


def load_or_refuse(folder: Path) -> Dataset | None:
    """load_dataset(folder), a DistillrecError (None), or the failure the fuzzing is after."""
    tracemalloc.start()
    try:
        ds = load_dataset(folder)
    except DistillrecError:
        ds = None
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert peak < PEAK_BYTES, f"reading the folder took {peak / 2**20:.0f} MiB"
    if ds is not None:
        check_sane(ds)
    return ds


def fuzz(base: Path, ops: list[tuple]) -> None:
    with tempfile.TemporaryDirectory(prefix="fuzz-") as tmp:
        folder = Path(tmp) / base.name
        shutil.copytree(base, folder)
        apply(folder, ops)
        load_or_refuse(folder)


FUZZ = settings(
    max_examples=120,
    deadline=3000,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def test_valid_bases_load(bases):
    for folder in bases.values():
        check_sane(load_dataset(folder))


@FUZZ
@given(ops=st.lists(corruptions(BASES["mmrec"][1]), min_size=1, max_size=3))
# a label of 10**12 was read as 10**12 + 1 classes (models size their classifiers by it)
@example(ops=[("npy", "category_label.npy", ("value", 0.5, 10**12))])
def test_fuzz_mmrec(bases, ops):
    fuzz(bases["mmrec"], ops)


@FUZZ
@given(ops=st.lists(corruptions(BASES["mmrec_seq"][1]), min_size=1, max_size=3))
# found by this fuzzing: a damaged .npy header made numpy raise tokenize.TokenError (now a DataError)
@example(ops=[("delete", "text_feat.npy", 0.25, 2)])
# a header claiming 10**12 rows made numpy try to allocate 13 TiB (MemoryError), 10**9 rows 13 GiB
@example(ops=[("npy", "image_feat.npy", ("claim", 10**12))])
@example(ops=[("npy", "text_feat.npy", ("claim", 10**9))])
# without feature files, an itemID of 10**12 in the .seq.inter made n_items 10**12 + 1
@example(
    ops=[
        ("remove", "image_feat.npy"),
        ("remove", "text_feat.npy"),
        ("cell", "syn.seq.inter", 0.5, 0.3, str(10**12)),
    ]
)
def test_fuzz_mmrec_sequences(bases, ops):
    fuzz(bases["mmrec_seq"], ops)


@FUZZ
@given(ops=st.lists(corruptions(BASES["recbole"][1]), min_size=1, max_size=3))
def test_fuzz_recbole(bases, ops):
    fuzz(bases["recbole"], ops)


@FUZZ
@given(ops=st.lists(corruptions(BASES["recbole_features"][1]), min_size=1, max_size=3))
# found by this fuzzing: an item token of 4.9e167 overflowed int64 into a negative id (scipy's ValueError)
@example(ops=[("cell", "rbf.inter", 0.8, 0.43813990805811065, "4.891737517463338e+167")])
def test_fuzz_recbole_with_features(bases, ops):
    fuzz(bases["recbole_features"], ops)


@FUZZ
@given(ops=st.lists(corruptions(BASES["recbole_pre_split"][1]), min_size=1, max_size=3))
def test_fuzz_recbole_pre_split(bases, ops):
    fuzz(bases["recbole_pre_split"], ops)


@FUZZ
@given(ops=st.lists(corruptions(BASES["sgfd"][1]), min_size=1, max_size=3))
@example(ops=[("npy", "MetaData_normal.npy", ("value", 0.5, 10**12))])
def test_fuzz_sgfd(bases, ops):
    fuzz(bases["sgfd"], ops)
