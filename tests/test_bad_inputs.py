"""The project's bad-input corpus: every reader, command and run artefact, given something wrong.

Each case asserts the promise: exit code 2, exactly one line on stderr that starts with `error:` and names
the problem, no traceback, and no run folder left behind by a refused training.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from distillrec.cli import main
from tests.conftest import make_dataset, write_mmrec


@dataclass
class Case:
    name: str
    # (data folder, finished run folder, scratch folder) -> command-line arguments
    args: Callable[[Path, Path, Path], list[str]]
    expect: str  # a fragment of the one line


def _data(tmp: Path, change: Callable[[Path], None]) -> Path:
    folder = Path(write_mmrec(make_dataset(), tmp / "bad"))
    change(folder)
    return folder


def _edit_inter(fn: Callable[[list[str]], list[str]]) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        path = folder / "synthetic.inter"
        path.write_text("\n".join(fn(path.read_text().splitlines())) + "\n")

    return change


def _set_cell(line: int, column: int, value: str) -> Callable[[Path], None]:
    def fn(lines: list[str]) -> list[str]:
        cells = lines[line].split("\t")
        cells[column] = value
        lines[line] = "\t".join(cells)
        return lines

    return _edit_inter(fn)


def _absurd_npy(path: Path) -> None:
    """A .npy whose header claims 2**40 × 2**40 floats: numpy overflows (and warns) sizing it."""
    from numpy.lib import format as npy_format

    with open(path, "wb") as f:
        npy_format.write_array_header_1_0(
            f, {"descr": "<f4", "fortran_order": False, "shape": (2**40, 2**40)}
        )
        f.write(bytes(64))


def test_an_absurd_npy_header_is_one_error_with_no_warning_before_it(tmp_path):
    import warnings

    from distillrec.data.formats.arrays import load_feature
    from distillrec.errors import DataError

    _absurd_npy(tmp_path / "image_feat.npy")
    with (
        warnings.catch_warnings(record=True) as caught,
        pytest.raises(DataError, match="not a readable .npy"),
    ):
        warnings.simplefilter("always")
        load_feature(tmp_path / "image_feat.npy")
    assert not caught, [str(w.message) for w in caught]


def _feature(array: np.ndarray, name: str = "image_feat.npy") -> Callable[[Path], None]:
    return lambda folder: np.save(folder / name, array)


def train_on(change: Callable[[Path], None], *extra: str) -> Callable[[Path, Path, Path], list[str]]:
    return lambda data, run, tmp: [
        "train",
        "-m",
        "vbpr",
        "-d",
        str(_data(tmp, change)),
        "--set",
        "epochs=1",
        "--out",
        str(tmp / "runs"),
        "--quiet",
        *extra,
    ]


def train(*args: str) -> Callable[[Path, Path, Path], list[str]]:
    return lambda data, run, tmp: [
        "train",
        "-d",
        str(data),
        "--set",
        "epochs=1",
        "--out",
        str(tmp / "runs"),
        "--quiet",
        *args,
    ]


def damaged(name: str, how: str, *command: str) -> Callable[[Path, Path, Path], list[str]]:
    def args(data: Path, run: Path, tmp: Path) -> list[str]:
        copy = tmp / "run"
        shutil.copytree(run, copy)
        path = copy / name
        if how == "missing":
            path.unlink()
        elif how == "truncated":
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        elif how == "garbage":
            path.write_bytes(np.random.default_rng(0).bytes(500))
        elif how == "empty":
            path.write_bytes(b"")
        elif how == "edited":
            path.write_bytes(path.read_bytes().replace(b"1", b"2", 1))
        return [*command, str(copy)]

    return args


def resume_with_damaged_last(data: Path, run: Path, tmp: Path) -> list[str]:
    copy = tmp / "runs"
    shutil.copytree(run.parents[2], copy)
    (last,) = copy.glob("*/*/seed1/last.pt")
    (last.parent / "metrics.json").unlink()  # unfinished: resume reads last.pt
    last.write_bytes(last.read_bytes()[:1000])
    return [
        "train",
        "-m",
        "bprmf",
        "-d",
        str(data),
        "--set",
        "epochs=2",
        "--seeds",
        "1",
        "--out",
        str(copy),
        "--resume",
        "--quiet",
    ]


CASES = [
    # -- readers: the interaction file
    Case("no interaction file", train_on(lambda f: (f / "synthetic.inter").unlink()), "no .inter file"),
    Case("empty interaction file", train_on(lambda f: (f / "synthetic.inter").write_text("")), "empty"),
    Case("header only", train_on(_edit_inter(lambda ls: ls[:1])), "no interactions"),
    Case(
        "missing itemID column",
        train_on(_edit_inter(lambda ls: [ln.replace("itemID", "item") for ln in ls])),
        "missing required column 'itemID'",
    ),
    Case("text user id", train_on(_set_cell(3, 0, "alice")), "line 4"),
    Case("negative item id", train_on(_set_cell(5, 1, "-3")), "line 6"),
    Case("huge user id", train_on(_set_cell(2, 0, str(10**12))), "dense indices"),
    Case("item id beyond the feature rows", train_on(_set_cell(2, 1, "40")), "out of range"),
    Case("x_label 3", train_on(_set_cell(4, 2, "3")), "line 5"),
    Case("ragged line", train_on(_edit_inter(lambda ls: ls[:7] + [ls[7] + "\t9"] + ls[8:])), "line 8"),
    Case("duplicate pair", train_on(_edit_inter(lambda ls: ls + [ls[1]])), "duplicate pair"),
    Case(
        "duplicate header column",
        train_on(_edit_inter(lambda ls: [ls[0].replace("x_label", "userID")] + ls[1:])),
        "appears twice",
    ),
    Case(
        "no test rows",
        train_on(_edit_inter(lambda ls: [ln for ln in ls if not ln.endswith("\t2")])),
        "no test interactions",
    ),
    # -- readers: features and labels
    Case("NaN feature", train_on(_feature(np.full((40, 13), np.nan, dtype=np.float32))), "non-finite"),
    Case(
        "feature rows fewer than items",
        train_on(_feature(np.ones((10, 13), dtype=np.float32))),
        "one row per item",
    ),
    Case("zero-width feature", train_on(_feature(np.ones((40, 0), dtype=np.float32))), "empty"),
    Case("1-D feature", train_on(_feature(np.ones(40, dtype=np.float32))), "2-D"),
    Case("text feature", train_on(_feature(np.array([["a"] * 3] * 40))), "numeric"),
    Case(
        "garbage feature file",
        train_on(lambda f: (f / "text_feat.npy").write_bytes(b"\x00garbage" * 20)),
        "not a readable .npy",
    ),
    Case(
        "feature header claiming an absurd shape",
        train_on(lambda f: _absurd_npy(f / "text_feat.npy")),
        "not a readable .npy",
    ),
    Case(
        "labels of the wrong length",
        train_on(lambda f: np.save(f / "category_label.npy", np.zeros(3, np.int64))),
        "category_label.npy",
    ),
    # -- train: options and methods
    Case("unknown model", train("-m", "nosuch"), "unknown model"),
    Case(
        "unknown dataset",
        lambda d, r, t: ["train", "-m", "bprmf", "-d", "nosuchdata", "--out", str(t / "runs")],
        "unknown dataset",
    ),
    Case("unknown option", train("-m", "bprmf", "--set", "nonsense=1"), "nonsense"),
    Case("text learning rate", train("-m", "bprmf", "--set", "lr=fast"), "lr"),
    Case("negative learning rate", train("-m", "bprmf", "--set", "lr=-1"), "lr"),
    Case("no '=' in --set", train("-m", "bprmf", "--set", "lr"), "key=value"),
    Case("epochs=0", train("-m", "bprmf", "--set", "epochs=0"), "epochs"),
    Case("valid metric not evaluated", train("-m", "bprmf", "--set", "valid_metric=recall@7"), "recall@7"),
    Case("unknown valid metric", train("-m", "bprmf", "--set", "valid_metric=auc@20"), "unknown metric"),
    Case("unknown distiller", train("-m", "vbpr", "--distill", "nosuch"), "unknown distillation method"),
    Case("two distillers", train("-m", "vbpr", "--distill", "ckd,sgfd"), "composing"),
    Case(
        "ckd on a model without features",
        train("-m", "lightgcn", "--distill", "ckd"),
        "takes no item features",
    ),
    Case(
        "ckd on a model that learns nothing", train("-m", "itemknn_cbf", "--distill", "ckd"), "learns nothing"
    ),
    Case("cdl on a top-K model", train("-m", "vbpr", "--distill", "cdl"), "next-item"),
    Case(
        "unknown distiller option",
        train("-m", "vbpr", "--distill", "ckd", "--set", "ckd.nonsense=1"),
        "nonsense",
    ),
    Case("unknown device", train("-m", "bprmf", "--device", "tpu"), "device"),
    Case("CUDA without a GPU", train("-m", "bprmf", "--device", "cuda:7"), "cuda"),
    Case("text seeds", train("-m", "bprmf", "--seeds", "one,two"), "seeds"),
    Case("missing config file", train("-m", "bprmf", "--config", "/nonexistent/run.yaml"), "run.yaml"),
    Case(
        "config file not YAML",
        lambda d, r, t: train("-m", "bprmf", "--config", str(_write(t / "c.yaml", "lr: [1, 2")))(d, r, t),
        "YAML",
    ),
    Case(
        "config file unknown key",
        lambda d, r, t: train("-m", "bprmf", "--config", str(_write(t / "c.yaml", "nonsense: 1\n")))(d, r, t),
        "nonsense",
    ),
    Case("option of the wrong type", train("-m", "bprmf", "--seeds"), "--seeds"),
    # -- run artefacts
    Case("not a run folder", lambda d, r, t: ["evaluate", str(t)], "not a run folder"),
    Case("no such folder", lambda d, r, t: ["evaluate", str(t / "nothing")], "not a run folder"),
    Case("best.pt missing", damaged("best.pt", "missing", "evaluate"), "best.pt: missing"),
    Case("best.pt truncated", damaged("best.pt", "truncated", "evaluate"), "best.pt: damaged"),
    Case("best.pt garbage", damaged("best.pt", "garbage", "recommend"), "best.pt: damaged"),
    Case("best.pt empty", damaged("best.pt", "empty", "evaluate"), "best.pt: damaged"),
    Case("metrics.json garbage", damaged("metrics.json", "garbage", "evaluate"), "metrics.json: damaged"),
    Case("metrics.json missing", damaged("metrics.json", "missing", "evaluate"), "has not finished"),
    Case("config.yaml garbage", damaged("config.yaml", "garbage", "evaluate"), "config.yaml: damaged"),
    Case("config.yaml edited", damaged("config.yaml", "edited", "evaluate"), "config.yaml: damaged"),
    Case("split.npz truncated", damaged("split.npz", "truncated", "evaluate"), "split.npz: damaged"),
    Case(
        "checksums.json garbage", damaged("checksums.json", "garbage", "evaluate"), "checksums.json: damaged"
    ),
    Case("last.pt damaged on resume", resume_with_damaged_last, "last.pt: damaged"),
    # -- evaluate / recommend / compare options
    Case("unknown split", lambda d, r, t: ["evaluate", str(r), "--split", "nonsense"], "split"),
    Case("unknown preset", lambda d, r, t: ["evaluate", str(r), "--preset", "nonsense"], "preset"),
    Case("recommend text users", lambda d, r, t: ["recommend", str(r), "--users", "a,b"], "--users"),
    Case(
        "recommend unknown user", lambda d, r, t: ["recommend", str(r), "--users", "999999"], "unknown user"
    ),
    Case("recommend k=0", lambda d, r, t: ["recommend", str(r), "-k", "0"], "k must be"),
    Case("recommend k above the items", lambda d, r, t: ["recommend", str(r), "-k", "100000"], "k must be"),
    Case("recommend k not a number", lambda d, r, t: ["recommend", str(r), "-k", "ten"], "'-k'"),
    Case("recommend --out a folder", lambda d, r, t: ["recommend", str(r), "--out", str(t)], "is a folder"),
    Case(
        "recommend --out in no folder",
        lambda d, r, t: ["recommend", str(r), "--out", str(t / "x" / "y.tsv")],
        "does not exist",
    ),
    Case("compare nothing", lambda d, r, t: ["compare", str(t / "nothing")], "nothing"),
    Case("compare a damaged run", damaged("metrics.json", "edited", "compare"), "metrics.json: damaged"),
    Case(
        "train --out a file",
        lambda d, r, t: [
            "train",
            "-m",
            "bprmf",
            "-d",
            str(d),
            "--set",
            "epochs=1",
            "--out",
            str(_write(t / "afile", "")),
            "--quiet",
        ],
        "cannot create the run folder",
    ),
    Case(
        "experiment --write a folder",
        lambda d, r, t: [
            "experiment",
            "-d",
            str(d),
            "--backbones",
            "mostpop",
            "--seeds",
            "2",
            "--out",
            str(t / "x"),
            "--write",
            str(t),
        ],
        "is a folder",
    ),
    # -- experiment definitions
    Case("experiment file missing", lambda d, r, t: ["experiment", str(t / "none.yaml")], "none.yaml"),
    Case(
        "experiment file unknown key",
        lambda d, r, t: ["experiment", str(_write(t / "e.yaml", "nonsense: 1\n"))],
        "nonsense",
    ),
    Case(
        "experiment unknown method",
        lambda d, r, t: [
            "experiment",
            "-d",
            str(d),
            "--backbones",
            "vbpr",
            "--methods",
            "nosuch",
            "--out",
            str(t / "x"),
        ],
        "nosuch",
    ),
]


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture(scope="module")
def finished(tmp_path_factory):  # noqa: ANN201
    """A valid data folder and one finished run in it (trained once for the module)."""
    from distillrec import train as train_api

    root = tmp_path_factory.mktemp("corpus")
    data = Path(write_mmrec(make_dataset(), root / "synthetic"))
    (result,) = train_api("bprmf", data, seeds=[1], set={"epochs": 2}, out=root / "runs")
    return data, result.run_dir


def test_the_corpus_is_large_and_its_names_unique():
    assert len(CASES) >= 40
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_a_bad_input_is_one_line_exit_2_and_leaves_no_run(case, finished, tmp_path, capsys, monkeypatch):
    data, run = finished
    args = case.args(data, run, tmp_path)
    monkeypatch.setattr(sys, "argv", ["distillrec", *args])
    with pytest.raises(SystemExit) as stop:
        main()
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert stop.value.code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    assert case.expect.lower() in lines[0].lower(), lines[0]
    if args[0] == "train" and "--resume" not in args:
        made = [p for p in (tmp_path / "runs").rglob("config.yaml")] if (tmp_path / "runs").exists() else []
        assert not made, f"a refused training left {made}"
