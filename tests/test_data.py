"""Data layer: readers (MMRec, SGFD, RecBole), validation messages, splits, registry, negative sampling."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from distillrec.data import NegativeSampler, epoch_batches, list_datasets, load_dataset
from distillrec.data.formats import read_mmrec, read_recbole, read_sgfd
from distillrec.data.registry import detect_format
from distillrec.data.split import holdout_sizes, leave_one_out, random_split
from distillrec.errors import ConfigError, DataError

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/datasets not available")

# A small valid MMRec dataset: 3 users, 6 items, every user has train, valid and test pairs.
TOY_ROWS = [
    (0, 0, 0), (0, 1, 0), (0, 2, 1), (0, 3, 2),
    (1, 1, 0), (1, 4, 0), (1, 5, 1), (1, 0, 2),
    (2, 2, 0), (2, 3, 0), (2, 4, 1), (2, 5, 2),
]  # fmt: skip


def write_tsv(path: Path, header: list[str], rows: list, newline: str = "\n") -> Path:
    lines = ["\t".join(header)] + ["\t".join(str(v) for v in r) for r in rows]
    path.write_text(newline.join(lines) + newline)
    return path


def make_toy(folder: Path, rows=TOY_ROWS, header=("userID", "itemID", "x_label"), features=True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    write_tsv(folder / "toy.inter", list(header), rows)
    if features:
        rng = np.random.default_rng(0)
        np.save(folder / "image_feat.npy", rng.normal(size=(6, 4)).astype(np.float32))
        np.save(folder / "text_feat.npy", rng.normal(size=(6, 3)).astype(np.float32))
    return folder


def sizes(ds) -> tuple[int, ...]:
    return ds.n_users, ds.n_items, ds.train.nnz, ds.valid.nnz, ds.test.nnz


def error_of(fn, *args, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    msg = str(info.value)
    assert "\n" not in msg, "DataError messages are one line"
    return msg


# ---------------------------------------------------------------- MMRec reader, happy paths


def test_toy_mmrec_reads_split_features_and_ignores_variant_files(tmp_path):
    folder = make_toy(tmp_path / "toy")
    np.save(folder / "text_feat_joint512.npy", np.zeros((6, 2), np.float32))  # a variant, not a modality
    np.save(folder / "audio_feat.npy", np.ones((6, 2), np.float64))  # a free modality name
    np.save(folder / "category_label.npy", np.array([0, 1, -1, 2, 0, 1]))
    ds = read_mmrec(folder)
    assert (ds.name, ds.n_users, ds.n_items) == ("toy", 3, 6)
    assert (ds.train.nnz, ds.valid.nnz, ds.test.nnz) == (6, 3, 3)
    assert ds.feature_dims == {"audio": 2, "image": 4, "text": 3}
    assert all(f.dtype == torch.float32 for f in ds.features.values())
    assert ds.labels.dtype == torch.int64 and ds.labels.tolist() == [0, 1, -1, 2, 0, 1]
    assert ds.test[0, 3] == 1 and ds.valid[1, 5] == 1


def test_without_features_items_are_max_id_plus_one_and_crlf_is_fine(tmp_path):
    folder = tmp_path / "nofeat"
    folder.mkdir()
    write_tsv(folder / "toy.inter", ["userID", "itemID", "x_label"], TOY_ROWS + [(4, 9, 0)], newline="\r\n")
    ds = read_mmrec(folder)
    assert (ds.n_users, ds.n_items, ds.features) == (5, 10, {})


def test_sequences_grouped_by_user_and_ordered_by_position(tmp_path):
    folder = make_toy(tmp_path / "toy")
    events = [(1, 4, 0, 1), (0, 3, 2, 2), (1, 1, 0, 0), (0, 0, 0, 0), (0, 1, 1, 1), (1, 5, 2, 2)]
    write_tsv(folder / "toy.seq.inter", ["userID", "itemID", "x_label", "position"], events)
    seq = read_mmrec(folder).sequences
    assert seq.offsets.tolist() == [0, 3, 6, 6]
    assert seq.items.tolist() == [0, 1, 3, 1, 4, 5]
    assert seq.label.tolist() == [0, 1, 2, 0, 0, 2]


def test_sequences_without_x_label_are_leave_one_out(tmp_path):
    folder = make_toy(tmp_path / "toy")
    write_tsv(
        folder / "toy.seq.inter",
        ["userID", "itemID", "position"],
        [(0, 2, 5), (0, 1, 3), (0, 0, 9), (1, 1, 0)],
    )
    seq = read_mmrec(folder).sequences
    assert seq.items.tolist() == [1, 2, 0, 1] and seq.label.tolist() == [0, 1, 2, 0]


# ---------------------------------------------------------------- validation: one line, file, row, problem


def _rows_with(row_index: int, row) -> list:
    rows = list(TOY_ROWS)
    rows[row_index] = row
    return rows


BAD_INTER = {
    # name: (rows, header, expected substrings); data row k is on line k + 2 (header is line 1)
    "item out of range": (_rows_with(2, (0, 6, 1)), None, ["toy.inter, line 4", "itemID 6 is out of range", "image_feat.npy"]),
    "negative user": (_rows_with(3, (-1, 3, 2)), None, ["toy.inter, line 5", "userID -1 is negative"]),
    "non-integer item": (_rows_with(0, (0, "abc", 0)), None, ["toy.inter, line 2", "itemID 'abc' is not an integer"]),
    "fractional item": (_rows_with(0, (0, 1.5, 0)), None, ["toy.inter, line 2", "'1.5' is not an integer"]),
    "unknown split label": (_rows_with(5, (1, 4, 3)), None, ["toy.inter, line 7", "x_label 3 is not a split label"]),
    "negative split label": (_rows_with(5, (1, 4, -1)), None, ["toy.inter, line 7", "x_label -1 is not a split label"]),
    "missing column": (TOY_ROWS, ("userID", "item", "x_label"), ["toy.inter", "missing required column 'itemID'",
                                                                 "columns found: userID, item, x_label"]),
    "empty split": ([r for r in TOY_ROWS if r[2] != 2], None, ["toy.inter", "no test interactions"]),
    "duplicate pair": (TOY_ROWS + [(0, 1, 2)], None, ["toy.inter, lines 3 and 14", "duplicate pair userID 0, itemID 1"]),
    "too many fields": (_rows_with(1, (0, 1, 0, 7)), None, ["toy.inter, line 3", "malformed row with 4 fields, expected 3"]),
    "too few fields": (_rows_with(1, (0, 1)), None, ["toy.inter, line 3", "malformed row with 2 fields, expected 3"]),
    "header only": ([], None, ["toy.inter", "no interactions"]),
}  # fmt: skip


@pytest.mark.parametrize("case", list(BAD_INTER))
def test_bad_inter_files_name_file_line_and_problem(tmp_path, case):
    rows, header, expected = BAD_INTER[case]
    folder = make_toy(tmp_path / "toy", rows=rows, header=header or ("userID", "itemID", "x_label"))
    msg = error_of(read_mmrec, folder)
    for part in expected:
        assert part in msg, f"{part!r} not in {msg!r}"


def test_blank_lines_count_in_line_numbers(tmp_path):
    folder = make_toy(tmp_path / "toy")
    (folder / "toy.inter").write_text("userID\titemID\tx_label\n0\t0\t0\n\n\n0\tx\t2\n")
    assert "toy.inter, line 5: itemID 'x' is not an integer" in error_of(read_mmrec, folder)


def test_feature_rows_disagree_names_both_files(tmp_path):
    folder = make_toy(tmp_path / "toy")
    np.save(folder / "text_feat.npy", np.zeros((5, 3), np.float32))
    msg = error_of(read_mmrec, folder)
    assert "text_feat.npy has 5 rows" in msg and "image_feat.npy has 6" in msg


def test_non_finite_feature_names_file_and_first_bad_row(tmp_path):
    folder = make_toy(tmp_path / "toy")
    feat = np.zeros((6, 4), np.float32)
    feat[3, 1], feat[5, 0] = np.nan, np.inf
    np.save(folder / "image_feat.npy", feat)
    msg = error_of(read_mmrec, folder)
    assert "image_feat.npy: row 3" in msg and "non-finite" in msg and "2 rows are affected" in msg


def test_feature_must_be_a_matrix(tmp_path):
    folder = make_toy(tmp_path / "toy")
    np.save(folder / "image_feat.npy", np.zeros(6, np.float32))
    assert "image_feat.npy: feature array must be 2-D" in error_of(read_mmrec, folder)


def test_label_file_of_wrong_length(tmp_path):
    folder = make_toy(tmp_path / "toy")
    np.save(folder / "category_label.npy", np.zeros(5, np.int64))
    msg = error_of(read_mmrec, folder)
    assert "category_label.npy has 5 entries but there are 6 items" in msg and "image_feat.npy" in msg


def test_missing_folder_no_inter_and_several_inter(tmp_path):
    assert "does not exist" in error_of(read_mmrec, tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    assert "no .inter file" in error_of(read_mmrec, tmp_path / "empty")
    assert "no .inter file" in error_of(load_dataset, tmp_path / "empty")
    folder = make_toy(tmp_path / "toy")
    write_tsv(folder / "other.inter", ["userID", "itemID"], [(0, 1)])
    msg = error_of(read_mmrec, folder)
    assert "several .inter files (other.inter, toy.inter)" in msg
    assert read_mmrec(folder, name="toy").name == "toy"


def test_empty_file(tmp_path):
    folder = make_toy(tmp_path / "toy")
    (folder / "toy.inter").write_text("")
    assert "toy.inter: file is empty" in error_of(read_mmrec, folder)


def test_bad_sequence_files(tmp_path):
    folder = make_toy(tmp_path / "toy")
    write_tsv(folder / "toy.seq.inter", ["userID", "itemID", "position"], [(0, 1, 0), (0, 2, 1), (0, 3, 1)])
    assert "toy.seq.inter, lines 3 and 4: user 0 has two events at position 1" in error_of(read_mmrec, folder)
    write_tsv(folder / "toy.seq.inter", ["userID", "itemID"], [(0, 1)])
    assert "missing required column 'position'" in error_of(read_mmrec, folder)
    write_tsv(folder / "toy.seq.inter", ["userID", "itemID", "position"], [(0, 1, 0), (0, 7, 1)])
    msg = error_of(read_mmrec, folder)
    assert "toy.seq.inter, line 3: itemID 7 is out of range" in msg and "image_feat.npy" in msg


def test_unknown_split_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown split 'halves'"):
        read_mmrec(make_toy(tmp_path / "toy"), split="halves")


def test_loo_needs_an_order(tmp_path):
    assert "split='loo' needs a position or timestamp" in error_of(
        read_mmrec, make_toy(tmp_path / "t"), split="loo"
    )


# ---------------------------------------------------------------- splits


def test_holdout_sizes_follow_mmrec_and_keep_a_train_pair():
    n = np.array([1, 2, 3, 5, 9, 10, 15, 19, 20, 101])
    valid, test = holdout_sizes(n, 0.1, 0.1)
    assert valid.tolist() == [0, 0, 1, 1, 1, 1, 1, 1, 2, 10]
    assert test.tolist() == [0, 1, 1, 1, 1, 1, 2, 2, 2, 10]
    assert (n - valid - test >= 1).all()
    v, t = holdout_sizes(np.arange(1, 60), 0.45, 0.45)
    assert (np.arange(1, 60) - v - t >= 1).all()


def test_random_split_is_seeded_row_order_free_and_keeps_train():
    rng = np.random.default_rng(1)
    users = np.repeat(np.arange(300), rng.integers(1, 30, 300))
    items = np.concatenate([rng.permutation(50)[: (users == u).sum()] for u in range(300)])
    a = random_split(users, items, seed=3)
    assert np.array_equal(a, random_split(users, items, seed=3))
    assert not np.array_equal(a, random_split(users, items, seed=4))
    perm = rng.permutation(len(users))
    assert np.array_equal(random_split(users[perm], items[perm], seed=3), a[perm])
    has_train = np.bincount(users[a == 0], minlength=300)
    assert (has_train >= 1).all()
    counts = np.bincount(users, minlength=300)
    assert ((np.bincount(users[a == 2], minlength=300) >= 1) == (counts >= 2)).all()


def test_leave_one_out_takes_last_and_second_last():
    users = np.array([0, 0, 0, 0, 1, 1, 2])
    items = np.array([5, 6, 7, 8, 1, 2, 3])
    order = np.array([3.0, 1.0, 4.0, 2.0, 0.0, 9.0, 1.0])
    assert leave_one_out(users, items, order).tolist() == [1, 0, 2, 0, 0, 2, 0]
    tied = leave_one_out(users, items, np.zeros(7), seed=5)
    assert np.array_equal(tied, leave_one_out(users, items, np.zeros(7), seed=5))


# ---------------------------------------------------------------- the bundled real dataset


def test_bundled_scientific_matches_its_documentation():
    load_dataset("scientific")  # warm the imports
    start = time.perf_counter()
    ds = load_dataset("scientific")
    assert time.perf_counter() - start < 1.0
    assert (ds.n_users, ds.n_items) == (2928, 1585)
    assert (ds.train.nnz, ds.valid.nnz, ds.test.nnz) == (13763, 2902, 2903)
    assert ds.feature_dims == {"image": 512, "text": 384}
    assert ds.n_labels == 23 and int((ds.labels == -1).sum()) == 44
    seq = ds.sequences
    assert len(seq.items) == 19712 and len(seq.offsets) == 2929
    assert np.bincount(seq.label).tolist() == [13856, 2928, 2928]
    last = seq.offsets[1:] - 1
    assert (seq.label[last] == 2).all()
    assert ds.split_hash == load_dataset("scientific").split_hash


def test_random_split_on_scientific_is_deterministic_and_keeps_train():
    a, b = (
        load_dataset("scientific", split="random", seed=7),
        load_dataset("scientific", split="random", seed=7),
    )
    assert a.split_hash == b.split_hash != load_dataset("scientific", split="random", seed=8).split_hash
    assert (np.diff(a.train.indptr) >= 1).all()
    total = a.train + a.valid + a.test
    assert total.nnz == 13763 + 2902 + 2903 and total.max() == 1


def test_builtin_found_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DISTILLREC_DATA", raising=False)
    assert load_dataset("Scientific").n_items == 1585


# ---------------------------------------------------------------- registry


def test_registry_finds_folders_under_env_var_by_folder_name_and_stem(tmp_path, monkeypatch):
    make_toy(tmp_path / "root" / "my-toy-data")
    monkeypatch.setenv("DISTILLREC_DATA", str(tmp_path / "nothing-here") + ":" + str(tmp_path / "root"))
    assert load_dataset("toy").n_items == 6
    assert load_dataset("my-toy-data").n_users == 3
    msg = error_of(load_dataset, "no-such-set")
    assert "unknown dataset 'no-such-set'" in msg and "scientific" in msg and "toy" in msg
    assert load_dataset(tmp_path / "root" / "my-toy-data").name == "toy"
    entries = {d["name"]: d for d in list_datasets()}
    assert entries["scientific"]["users"] == 2928 and entries["scientific"]["builtin"]
    assert entries["my-toy-data"]["aliases"] == ["my-toy-data", "toy"]


@needs_shared
def test_amazon_baby_by_path():
    ds = load_dataset(SHARED / "amazon-baby")
    assert sizes(ds) == (19445, 7050, 119674, 20559, 20559)
    assert ds.item_tokens[0] == "097293751X" and ds.user_tokens[0] == "A1HK2FQW6KXQB2"
    resplit = load_dataset(SHARED / "amazon-baby", split="random")
    # MMRec's splitting rule on Baby's degrees gives 20,559 valid and 21,682 test pairs (SOURCE.md)
    assert (resplit.valid.nnz, resplit.test.nnz) == (20559, 21682)


@needs_shared
def test_office_by_name_is_sgfd_with_a_carved_validation_split(monkeypatch):
    monkeypatch.setenv("DISTILLREC_DATA", str(SHARED))
    assert detect_format(SHARED / "amazon-office-sgfd") == "sgfd"
    ds = load_dataset("office")
    assert (ds.n_users, ds.n_items, ds.test.nnz) == (4874, 2406, 15930)
    assert ds.train.nnz + ds.valid.nnz == 37027
    train_plus_valid = np.diff(ds.train.indptr) + np.diff(ds.valid.indptr)
    assert ds.valid.nnz == int((train_plus_valid >= 3).sum()) and ds.valid.max() == 1
    assert (ds.valid.multiply(ds.test)).nnz == 0
    assert load_dataset("office", seed=1).split_hash != ds.split_hash


@needs_shared
def test_recbole_pre_split_benchmark_agrees_with_the_mmrec_derivation():
    ds = read_recbole(SHARED / "amazon-scientific" / "raw")
    assert sizes(ds) == (2928, 1585, 13763, 2902, 2903)
    assert np.bincount(ds.sequences.label).tolist() == [13856, 2928, 2928]


# ---------------------------------------------------------------- SGFD and RecBole readers on small files


def make_sgfd(folder: Path, train: list, test: list) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train.csv", train), ("test.csv", test)):
        lines = ["itemID,userID,reviewerID,asin"] + [f"{i},{u},R{u},A{i}" for u, i in rows]
        (folder / name).write_text("\n".join(lines) + "\n")
    return folder


def test_sgfd_carves_validation_from_train_only(tmp_path):
    train = [(0, 0), (0, 1), (0, 2), (1, 3), (1, 4), (2, 0), (2, 1), (2, 2), (2, 3)]
    folder = make_sgfd(tmp_path / "sg", train, [(0, 4), (1, 0), (2, 5)])
    np.save(folder / "FeatureImage_normal.npy", np.ones((9, 2), np.float32))  # more rows than items: cut
    np.save(folder / "MetaData_normal.npy", np.arange(9))
    ds = read_sgfd(folder)
    assert (ds.n_users, ds.n_items, ds.test.nnz, ds.valid.nnz, ds.train.nnz) == (3, 6, 3, 2, 7)
    assert np.diff(ds.valid.indptr).tolist() == [1, 0, 1]
    assert ds.feature_dims == {"image": 2} and ds.labels.tolist() == [0, 1, 2, 3, 4, 5]
    assert ds.user_tokens.tolist() == ["R0", "R1", "R2"]


def test_sgfd_errors_name_the_csv_file_and_line(tmp_path):
    folder = make_sgfd(tmp_path / "sg", [(0, 0), (0, 1), (1, 2)], [(0, 1)])
    assert "train.csv, line 3 and" in (msg := error_of(read_sgfd, folder)) and "test.csv, line 2" in msg
    (folder / "test.csv").write_text("itemID,user\n1,0\n")
    assert "test.csv: missing required column 'userID'; columns found: itemID, user" in error_of(
        read_sgfd, folder
    )


def test_recbole_tokens_timestamps_and_leave_one_out(tmp_path):
    rows = [
        ("alice", "x", 5.0, 30), ("alice", "y", 4.0, 10), ("alice", "z", 3.0, 20), ("alice", "y", 4.0, 40),
        ("bob", "z", 1.0, 1), ("bob", "w", 2.0, 2), ("bob", "v", 2.0, 3), ("carol", "x", 2.0, 1),
    ]  # fmt: skip
    write_tsv(
        tmp_path / "rb.inter", ["user_id:token", "item_id:token", "rating:float", "timestamp:float"], rows
    )
    assert detect_format(tmp_path) == "recbole"
    ds = load_dataset(tmp_path)
    assert ds.user_tokens.tolist() == ["alice", "bob", "carol"]
    assert ds.item_tokens.tolist() == ["x", "y", "z", "w", "v"]
    # alice: y(10) z(20) x(30), the repeated y(40) dropped -> test x, valid z; bob: test v, valid w
    assert ds.test.toarray().nonzero()[1].tolist() == [0, 4]
    assert ds.valid.toarray().nonzero()[1].tolist() == [2, 3]
    assert ds.sequences.items[:4].tolist() == [1, 2, 0, 1]
    write_tsv(tmp_path / "rb.inter", ["user_id", "item_id:token"], [r[:2] for r in rows])
    assert "column 'user_id' is not typed" in error_of(read_recbole, tmp_path)


# ---------------------------------------------------------------- negative sampling


def test_sampler_never_returns_a_positive_on_real_data():
    ds = load_dataset("scientific")
    sampler = NegativeSampler(ds.train, seed=0)
    gen = torch.Generator().manual_seed(0)
    users = torch.arange(ds.n_users).repeat(50)
    train = ds.train.tocsr()
    for _ in range(3):
        neg = sampler.sample(users, gen).numpy().copy()
        assert np.asarray(train[users.numpy().copy(), neg]).sum() == 0
        assert neg.min() >= 0 and neg.max() < ds.n_items


def test_sampler_is_uniform_and_handles_dense_users():
    n_items = 10
    dense = sp.csr_matrix(
        np.array([[1] * 9 + [0], [1, 0, 1, 0, 1, 0, 1, 0, 1, 0], [0] * 10], dtype=np.float32)
    )
    sampler = NegativeSampler(dense, seed=0)
    gen = torch.Generator().manual_seed(1)
    neg = sampler.sample(torch.tensor([0] * 2000 + [1] * 5000 + [2] * 10000), gen).numpy()
    assert (neg[:2000] == 9).all()
    counts_1 = np.bincount(neg[2000:7000], minlength=n_items)
    assert counts_1[::2].sum() == 0 and (abs(counts_1[1::2] - 1000) < 150).all()
    counts_2 = np.bincount(neg[7000:], minlength=n_items)
    assert (abs(counts_2 - 1000) < 150).all()
    a = NegativeSampler(dense).sample(torch.tensor([1] * 50), torch.Generator().manual_seed(3))
    assert torch.equal(
        a, NegativeSampler(dense).sample(torch.tensor([1] * 50), torch.Generator().manual_seed(3))
    )


def test_exact_fallback_draws_free_items_only():
    rng = np.random.default_rng(0)
    dense = (rng.random((40, 30)) < 0.9).astype(np.float32)
    dense[np.arange(40), rng.integers(0, 30, 40)] = 0
    mat = sp.csr_matrix(dense)
    sampler = NegativeSampler(mat)
    users = torch.arange(40).repeat(100)
    neg = sampler._exact(users, torch.Generator().manual_seed(0))
    assert not sampler.is_positive(users, neg).any()


def test_user_with_every_item_positive_is_named():
    mat = sp.csr_matrix(np.array([[1, 0, 1], [1, 1, 1]], dtype=np.float32))
    assert "user 1 has all 3 items as training positives" in error_of(NegativeSampler, mat)


def test_epoch_batches_cover_every_pair_once_and_sampling_is_fast():
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 19000, 130000), rng.integers(0, 7000, 130000)
    train = sp.csr_matrix((np.ones(len(users), np.float32), (users, items)), shape=(19000, 7000))
    train.sum_duplicates()
    gen = torch.Generator().manual_seed(0)
    batches = list(epoch_batches(train, 4096, gen))
    u = torch.cat([b[0] for b in batches]).numpy()
    i = torch.cat([b[1] for b in batches]).numpy()
    assert len(u) == train.nnz and len(batches) == -(-train.nnz // 4096)
    assert len(np.unique(u.astype(np.int64) * 7000 + i)) == train.nnz
    sampler = NegativeSampler(train)
    all_users = torch.from_numpy(u)
    timings = []
    for _ in range(5):  # best of 5: the machine may be shared, a single timing is noisy
        start = time.perf_counter()
        neg = sampler.sample(all_users, gen)
        timings.append(time.perf_counter() - start)
    assert min(timings) < 0.2  # a few ms on an idle CPU
    assert not sampler.is_positive(all_users, neg).any()
