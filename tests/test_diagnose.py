"""`distillrec.diagnose`: each premise quantity on a case whose value is known, the verdict thresholds, the
result's schema, and the premise variants (seeded, hashed, at the SNR asked for)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from distillrec.data.registry import load_dataset
from distillrec.diagnose import diagnose, render_markdown, render_table
from distillrec.diagnose.forgetting import from_checkpoint, from_history
from distillrec.diagnose.reliance import imbalance, sample_triples
from distillrec.diagnose.semantics import label_signal, raw_probe, semantic_gap, unseparated_items
from distillrec.diagnose.thresholds import Case, fit, verdict
from distillrec.diagnose.variants import (
    PREMISE_ROOT,
    PREMISE_VARIANTS,
    add_noise,
    low_rank,
    snr_db,
    strip_category_path,
    write_variant,
)
from distillrec.errors import ConfigError, DataError, DistillrecError
from distillrec.experiment.api import load_run, train
from distillrec.experiment.definition import load_definition
from distillrec.models.registry import build_model
from distillrec.training.trainer import seed_everything
from tests.conftest import make_dataset, write_mmrec
from tests.test_next_item import make_seq_dataset, write_seq_inter

pytestmark = pytest.mark.usefixtures("one_thread")

VERDICTS = {"likely to help", "unlikely", "cannot tell", "not applicable"}


# --------------------------------------------------------------------------- CKD: reliance and imbalance
class _Popularity:
    """A stand-in teacher: an item's score is its entry of the representation (a popularity vector)."""

    def pair_score(self, rep: torch.Tensor, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return rep[items]


def test_a_model_that_ignores_a_modality_shows_the_imbalance():
    ds = make_dataset(n_users=40, n_items=30)
    torch.manual_seed(0)
    model = build_model("vbpr", ds).eval()
    with torch.no_grad():  # the image projection outputs zero: the model cannot use the image
        model.proj["image"].weight.zero_()
        model.proj["image"].bias.zero_()
    triples = sample_triples(ds, 512, seed=0)
    if imbalance(model, ds.features, triples)["delta"]["text"] < 0:  # make the text help, as training would
        with torch.no_grad():
            model.proj["text"].weight.neg_()
    # teachers scoring by training popularity: positive margins on training triples, the same per modality
    popularity = torch.from_numpy(np.asarray(ds.train.sum(axis=0)).ravel()).float()
    out = imbalance(model, ds.features, triples, {m: (_Popularity(), popularity) for m in ds.features})
    assert out["delta"]["image"] == 0.0  # ablating what it ignores changes no margin
    assert out["delta"]["text"] > 1e-4
    assert out["teacher_margin"]["image"] == out["teacher_margin"]["text"] > 0
    assert out["rho"]["image"] == pytest.approx(1e-8 / out["teacher_margin"]["image"])
    assert out["rho"]["text"] == pytest.approx(out["delta"]["text"] / out["teacher_margin"]["text"], rel=1e-5)
    # the paper's rule gives the ignored modality (almost) all the weight; the weights sum to 1
    assert out["lambda"]["image"] > 0.99 and out["lambda"]["text"] < 0.01
    assert out["lambda"]["image"] + out["lambda"]["text"] == pytest.approx(1.0)


def test_triples_are_training_positives_and_unseen_negatives():
    ds = make_dataset(n_users=40, n_items=30)
    u, i, j = (t.numpy().copy() for t in sample_triples(ds, 300, seed=3))
    assert (np.asarray(ds.train[u, i]).ravel() == 1).all()
    assert (np.asarray(ds.train[u, j]).ravel() == 0).all()
    again = sample_triples(ds, 300, seed=3)
    assert all(np.array_equal(a, b.numpy()) for a, b in zip((u, i, j), again, strict=True))


# --------------------------------------------------------------------------- SGFD: semantics
def test_features_that_encode_the_labels_probe_near_one_and_leave_no_signal_beyond_them():
    ds = make_dataset(n_users=40, n_items=120, n_labels=4)
    lab = ds.labels.clamp(min=0)
    g = torch.Generator().manual_seed(1)
    ds.features = {
        "image": torch.nn.functional.one_hot(lab, 4).float() * 5 + 0.1 * torch.randn(120, 4, generator=g),
        "text": torch.randn(120, 6, generator=g),  # noise: probes near chance
    }
    probe = raw_probe(ds)
    assert probe["image"] > 0.95
    assert probe["text"] < 0.7
    assert not unseparated_items(ds).any()  # the image tells every category
    gap = semantic_gap(ds)
    assert gap["value"] == 0.0 and gap["unseparated"]["share_unseparated"] == 0.0


def test_label_signal_by_hand():
    # 3 users, 4 items; categories 0, 0, 1, 1. Training: u0 has item 0 (cat 0), u1 item 2 (cat 1), u2 item 0.
    train = sp.csr_matrix(([1, 1, 1], ([0, 1, 2], [0, 2, 0])), shape=(3, 4))
    # test: u0 -> item 1 (cat 0, met), u1 -> item 3 (cat 1, met), u2 -> item 3 (cat 1, not met)
    test = sp.csr_matrix(([1, 1, 1], ([0, 1, 2], [1, 3, 3])), shape=(3, 4))
    labels = torch.tensor([0, 0, 1, 1])
    unseparated = np.array([False, True, False, True])  # the features cannot tell items 1 and 3
    out = label_signal(train, test, labels, unseparated)
    assert out["share_unseparated"] == 1.0  # every test item is unseparated
    assert out["observed"] == pytest.approx(2 / 3)
    # permutation null: restricted categories are 0, 1, 1 (q = 1/3, 2/3); u0 met {0}, u1 {1}, u2 {0}
    chance = (1 / 3 + 2 / 3 + 1 / 3) / 3
    assert out["chance"] == pytest.approx(chance)
    assert out["value"] == pytest.approx(2 / 3 - chance)
    only_item1 = label_signal(train, test, labels, np.array([False, True, False, False]))
    assert only_item1["share_unseparated"] == pytest.approx(1 / 3)
    assert only_item1["observed"] == 1.0 and only_item1["chance"] == 1.0 and only_item1["value"] == 0.0


def test_semantic_gap_refuses_a_dataset_without_labels():
    ds = make_dataset(n_labels=0)
    with pytest.raises(DataError, match="no item labels"):
        semantic_gap(ds)


# --------------------------------------------------------------------------- CDL: forgetting
def test_forgetting_from_history_is_the_drop_to_the_best_epoch():
    history = pd.DataFrame(
        {
            "epoch": [1, 2, 3, 4],
            "code_corr_image": [0.99, 0.95, 0.90, 0.80],
            "code_corr_text": [0.98, 0.97, 0.97, 0.96],
            "cdl_corr_image": [0.5, 0.7, 0.9, 0.95],
            "loss": [4.0, 3.0, 2.0, 1.0],
        }
    )
    out = from_history(history, best_epoch=3)
    assert out["value"] == pytest.approx(0.09)
    assert out["drop"]["text"] == pytest.approx(0.01)
    assert out["supervised_first_best"]["image"] == [0.5, 0.9]
    assert out["curves"]["target"]["image"] == [0.99, 0.95, 0.90, 0.80]
    assert from_history(history.drop(columns=["code_corr_image", "code_corr_text"]), 3) is None


def _seq_run(tmp_path: Path, params: dict, epochs: int = 3) -> Path:
    ds = make_seq_dataset(n_users=40, n_items=50)
    write_seq_inter(ds, tmp_path / "seqdata")
    settings = {"epochs": epochs, "train.lr": 0.05, **params}
    return train("gru4rec", str(tmp_path / "seqdata"), seeds=[4], set=settings, out=tmp_path / "runs")[
        0
    ].run_dir


def test_frozen_modality_tables_show_no_forgetting(tmp_path):
    run = load_run(_seq_run(tmp_path, {"modality_input": True}), device="cpu")
    moved = from_checkpoint(run)
    assert moved["from"].startswith("checkpoint")
    assert moved["value"] > 1e-4  # training at a high lr moved the tables
    # the same run with its modality tables put back to their initial values (as if frozen): no forgetting
    seed_everything(4)
    initial = build_model("gru4rec", run.dataset, run.config["params"])
    with torch.no_grad():
        for m in run.dataset.modalities:
            run.model.modality[m].copy_(initial.modality[m])
    frozen = from_checkpoint(run)
    assert all(abs(d) < 1e-6 for d in frozen["drop"].values())


# --------------------------------------------------------------------------- thresholds
def test_threshold_fit_and_verdicts():
    none_helped = (Case(0.1, False, "a"), Case(0.3, False, "b"))
    assert fit(none_helped) == 0.3  # "likely" only beyond every case measured
    mixed = (Case(0.1, False, "a"), Case(0.2, False, "b"), Case(0.5, True, "c"), Case(0.6, True, "d"))
    assert fit(mixed) == 0.2
    assert verdict(0.25, 0.2) == "likely to help" and verdict(0.2, 0.2) == "unlikely"
    assert verdict(None, 0.2) == "cannot tell" and verdict(float("nan"), 0.2) == "cannot tell"


def test_the_shipped_evidence_is_what_the_proof_recorded():
    """Each case of `thresholds.EVIDENCE` carries the quantity `diagnose-proof` measured and kept for that
    run (experiments/state/diagnoses.jsonl): the thresholds are fitted to the recorded measurements."""
    import re

    from distillrec.diagnose.records import DiagnosisRecords
    from distillrec.diagnose.thresholds import EVIDENCE

    records = list(DiagnosisRecords(Path(__file__).resolve().parents[1] / "experiments" / "state"))
    checked = 0
    for method, cases in EVIDENCE.items():
        for case in cases:
            run = re.search(r"([\w.-]+@[0-9a-f]{10}/seed\d+)\)", case.source)
            assert run, case.source
            kept = [r for r in records if r.method == method and r.run.endswith("/" + run.group(1))]
            assert kept, f"no recorded diagnosis for {case.source}"
            assert kept[-1].value == pytest.approx(case.value, rel=1e-12), case.source
            checked += 1
    assert checked == sum(len(c) for c in EVIDENCE.values())


# --------------------------------------------------------------------------- diagnose(run_dir)
def _check_schema(result: dict) -> None:
    assert set(result) == {"schema", "runs", "model", "task", "dataset", "distill", "methods"}
    assert result["schema"] == 2 and set(result["methods"]) == {"ckd", "sgfd", "cdl"}
    for entry in result["methods"].values():
        keys = {"verdict", "quantity", "value", "values", "interval", "threshold", "reason", "details"}
        assert set(entry) == keys and len(entry["values"]) == len(result["runs"])
        assert entry["verdict"] in VERDICTS and entry["reason"]
        assert entry["value"] is None or isinstance(entry["value"], float)
        assert entry["interval"] is None or entry["interval"][0] <= entry["value"] <= entry["interval"][1]
    assert json.loads(json.dumps(result, allow_nan=False)) == result  # plain JSON, no NaN


@pytest.mark.slow
def test_diagnose_a_topk_run_trains_then_reuses_the_teachers(tmp_path):
    folder = write_mmrec(make_dataset(n_users=40, n_items=30), tmp_path / "data")
    run_dir = train("vbpr", folder, seeds=[1], set={"epochs": 2}, out=tmp_path / "runs")[0].run_dir
    first = diagnose(run_dir)
    _check_schema(first)
    ckd = first["methods"]["ckd"]
    assert ckd["verdict"] == "cannot tell" and "no cached uni-modal teacher" in ckd["reason"]
    assert first["methods"]["cdl"]["verdict"] == "not applicable"
    assert first["methods"]["sgfd"]["verdict"] in {"likely to help", "unlikely"}
    trained = diagnose(run_dir, train_teachers=True)["methods"]["ckd"]
    assert {e["teacher_from"] for e in trained["details"]["modalities"].values()} == {"trained now"}
    again = diagnose(run_dir)
    _check_schema(again)
    ckd = again["methods"]["ckd"]
    assert {e["teacher_from"] for e in ckd["details"]["modalities"].values()} == {"cache"}
    heads = [e["headroom"] for e in ckd["details"]["modalities"].values()]
    assert ckd["value"] == max(heads) and ckd["verdict"] in {"likely to help", "unlikely"}
    assert set(ckd["details"]["imbalance"]["lambda"]) == {"image", "text"}
    text = render_markdown(again)
    assert all(f"| {m} | {again['methods'][m]['verdict']} |" in text for m in ("ckd", "sgfd", "cdl"))
    assert render_table(again).row_count == 3


def test_diagnose_a_next_item_run(tmp_path):
    result = diagnose(_seq_run(tmp_path, {"modality_input": True}, epochs=2))
    _check_schema(result)
    m = result["methods"]
    assert m["ckd"]["verdict"] == "not applicable" and "next-item" in m["ckd"]["reason"]
    assert m["sgfd"]["verdict"] == "not applicable" and "labels" in m["sgfd"]["reason"]
    assert m["cdl"]["verdict"] in {"likely to help", "unlikely"}
    assert m["cdl"]["details"]["from"].startswith("checkpoint")


def test_an_id_only_next_item_model_cannot_tell_forgetting(tmp_path):
    result = diagnose(_seq_run(tmp_path, {}, epochs=1))
    assert result["methods"]["cdl"]["verdict"] == "cannot tell"
    assert "no modality item tables" in result["methods"]["cdl"]["reason"]


def test_one_modality_without_labels_leaves_ckd_and_sgfd_not_applicable(tmp_path):
    ds = make_dataset(n_users=30, n_items=30, modalities={"text": 5}, n_labels=0)
    res = train("vbpr", write_mmrec(ds, tmp_path / "data"), seeds=[1], set={"epochs": 1}, out=tmp_path)[0]
    result = diagnose(res.run_dir)
    _check_schema(result)
    m = result["methods"]
    assert m["ckd"]["verdict"] == "not applicable" and "balances modalities" in m["ckd"]["reason"]
    assert m["sgfd"]["verdict"] == "not applicable" and "no item labels" in m["sgfd"]["reason"]
    assert m["cdl"]["verdict"] == "not applicable" and m["ckd"]["details"] == {}


def _entry_with(value):  # noqa: ANN001, ANN202
    return {
        "verdict": verdict(value, 0.3),
        "quantity": "q",
        "value": value,
        "values": [value],
        "interval": None,
        "threshold": 0.3,
        "reason": "measured",
        "details": {"v": value},
    }


def test_several_runs_are_judged_by_their_mean_and_cannot_tell_near_the_threshold(monkeypatch):
    from distillrec.diagnose import report
    from distillrec.diagnose.thresholds import Threshold

    monkeypatch.setitem(report.THRESHOLDS, "ckd", Threshold("q", 0.3))
    one = _entry_with(0.31)
    assert report.combine("ckd", [one]) is one  # one run: its own value, no interval
    # seeds spread around the threshold (mean 0.32 ± 0.05): the interval holds 0.3, so no verdict
    near = report.combine("ckd", [_entry_with(v) for v in (0.27, 0.37, 0.30, 0.34)])
    assert near["verdict"] == "cannot tell" and near["value"] == pytest.approx(0.32)
    lo, hi = near["interval"]
    half = 3.182446 * np.std([0.27, 0.37, 0.30, 0.34], ddof=1) / 2  # t(0.975, 3) · sd / √4
    assert (lo, hi) == (pytest.approx(0.32 - half), pytest.approx(0.32 + half))
    assert "holds the threshold 0.3" in near["reason"] and near["values"] == [0.27, 0.37, 0.30, 0.34]
    far = report.combine("ckd", [_entry_with(v) for v in (0.40, 0.42, 0.41)])
    assert far["verdict"] == "likely to help" and far["interval"][0] > 0.3
    below = report.combine("ckd", [_entry_with(v) for v in (0.10, 0.12, 0.11)])
    assert below["verdict"] == "unlikely" and "<= 0.3" in below["reason"]
    gap = report.combine("ckd", [_entry_with(0.5), {**_entry_with(None), "reason": "no teacher"}])
    assert gap["verdict"] == "cannot tell" and "not measured on 1 of 2 runs: no teacher" in gap["reason"]


def test_diagnose_the_seeds_of_a_specification_together(tmp_path, monkeypatch, capsys):
    ds = make_seq_dataset(n_users=40, n_items=50)
    write_seq_inter(ds, tmp_path / "seqdata")
    settings = {"epochs": 2, "train.lr": 0.05, "modality_input": True}
    runs = train("gru4rec", str(tmp_path / "seqdata"), seeds=[2, 1], set=settings, out=tmp_path / "runs")
    spec_folder = runs[0].run_dir.parent
    result = diagnose(spec_folder)  # the folder of seed*/ runs stands for all of them, in seed order
    _check_schema(result)
    assert [Path(r).name for r in result["runs"]] == ["seed1", "seed2"]
    cdl = result["methods"]["cdl"]
    singles = [diagnose(spec_folder / f"seed{s}")["methods"]["cdl"]["value"] for s in (1, 2)]
    assert cdl["values"] == singles and cdl["value"] == pytest.approx(np.mean(singles))
    assert cdl["verdict"] in {"likely to help", "unlikely", "cannot tell"} and cdl["interval"] is not None
    assert "2 runs" in render_markdown(result)
    code, out, _ = _cli(
        monkeypatch, capsys, "diagnose", str(spec_folder / "seed1"), str(spec_folder / "seed2"), "--json"
    )
    assert code == 0 and json.loads(out)["methods"]["cdl"]["values"] == singles
    other = train(
        "gru4rec", str(tmp_path / "seqdata"), seeds=[1], set={**settings, "epochs": 1}, out=tmp_path / "o"
    )
    with pytest.raises(ConfigError, match=r"not a run of the specification .* \(differs in train.epochs\)"):
        diagnose([spec_folder / "seed1", other[0].run_dir])
    with pytest.raises(ConfigError, match="named twice"):
        diagnose([spec_folder, spec_folder / "seed1"])


def test_bad_run_folders_are_one_line_errors(tmp_path):
    with pytest.raises(DistillrecError, match="not a run folder"):
        diagnose(tmp_path)
    (tmp_path / "config.yaml").write_text("model: vbpr\n")
    with pytest.raises(DistillrecError, match="has not finished"):
        diagnose(tmp_path)


# --------------------------------------------------------------------------- variants
def test_noise_has_the_snr_asked_for_and_is_seeded():
    x = np.random.default_rng(0).normal(size=(800, 64)).astype(np.float32) + 0.5
    for target in (20.0, 0.0, -10.0):
        assert snr_db(x, add_noise(x, target, seed=1)) == pytest.approx(target, abs=0.05)
    assert np.array_equal(add_noise(x, 3.0, seed=1), add_noise(x, 3.0, seed=1))
    assert not np.array_equal(add_noise(x, 3.0, seed=1), add_noise(x, 3.0, seed=2))


def test_low_rank_has_the_rank_asked_for():
    x = np.random.default_rng(0).normal(size=(100, 20)).astype(np.float32)
    y = low_rank(x, 3)
    assert np.linalg.matrix_rank(y - y.mean(axis=0), tol=1e-4) == 3
    assert np.allclose(low_rank(x, 20), x, atol=1e-4)
    with pytest.raises(ConfigError, match="rank"):
        low_rank(x, 0)


def test_noise_variant_folders_are_seeded_and_hashed(tmp_path):
    src = Path(write_mmrec(make_dataset(n_users=30, n_items=300), tmp_path / "src"))
    a = write_variant("noise", src, tmp_path / "a", modality="image", snr_db=0, seed=1)
    b = write_variant("noise", src, tmp_path / "b", modality="image", snr_db=0, seed=1)
    c = write_variant("noise", src, tmp_path / "c", modality="image", snr_db=0, seed=2)
    assert a.written == ["image_feat.npy"]
    assert a.sha256["image_feat.npy"] == b.sha256["image_feat.npy"] != c.sha256["image_feat.npy"]
    assert a.sha256["text_feat.npy"] == c.sha256["text_feat.npy"]  # the other modality is a copy
    source_md = (a.path / "SOURCE.md").read_text()
    assert a.sha256["image_feat.npy"] in source_md and "snr_db" in source_md and str(src) in source_md
    ds = load_dataset(a.path)
    assert ds.name == "a" and ds.modalities == ["image", "text"]  # its own dataset name
    clean = np.load(src / "image_feat.npy")
    assert snr_db(clean, ds.features["image"].numpy()) == pytest.approx(0.0, abs=0.3)
    with pytest.raises(DataError, match="already exists"):
        write_variant("noise", src, tmp_path / "a", modality="image", snr_db=0, seed=1)
    with pytest.raises(ConfigError, match="needs snr_db"):
        write_variant("noise", src, tmp_path / "d", modality="image")
    with pytest.raises(ConfigError, match="unknown variant kind"):
        write_variant("blur", src, tmp_path / "d")


def test_drop_variant_leaves_the_modality_out(tmp_path):
    src = write_mmrec(make_dataset(n_users=30, n_items=40), tmp_path / "src")
    out = write_variant("drop", src, tmp_path / "image-only", modality="text")
    assert load_dataset(out.path).modalities == ["image"]
    assert "text_feat.npy" not in out.sha256


def test_category_path_is_stripped():
    text = (
        "Shoe GOO Adhesive, 3.7 fl oz. Industrial & Scientific Tapes, Adhesives & Sealants Cyanoacrylate "
        "Adhesives. Shoegoo."
    )
    assert strip_category_path(text) == "Shoe GOO Adhesive, 3.7 fl oz. Shoegoo."
    assert strip_category_path("Slides & Cover Glass. . CB.") == "Slides & Cover Glass. CB."
    assert strip_category_path("Angel Pads 2x2 in. Industrial & Scientific Medical. K.S. Choi Corp.") == (
        "Angel Pads 2x2 in. K.S. Choi Corp."
    )


def test_premise_experiments_name_the_premise_variants():
    root = Path(__file__).resolve().parents[1]
    named = set()
    for method in ("ckd", "sgfd", "cdl"):
        definition = load_definition(root / "experiments" / f"diagnose-{method}.yaml")
        named |= {d for d in definition.datasets if "/" in d}
    assert named == {str(PREMISE_ROOT / name) for name in PREMISE_VARIANTS}


class _Encoder:
    """A stand-in sentence encoder: a hash of the text's words (what is embedded is what we check)."""

    def encode(self, texts: list[str], **kwargs: object) -> np.ndarray:
        out = np.zeros((len(texts), 8), dtype=np.float32)
        for k, t in enumerate(texts):
            for w in t.split():
                out[k, sum(map(ord, w)) % 8] += 1
        if kwargs.get("normalize_embeddings"):
            out /= np.linalg.norm(out, axis=1, keepdims=True)
        return out


def test_no_category_text_variant_reembeds_the_stripped_text(tmp_path):
    ds = make_dataset(n_users=10, n_items=6, per_user=4)
    src = Path(write_mmrec(ds, tmp_path / "src"))
    texts = [
        "Glue, 15 g. Industrial & Scientific Tapes, Adhesives & Sealants. Gorilla.",
        "Slides. . CB.",
        "Reacher. Industrial & Scientific Material Handling Products Lifting. Vive.",
        "File. Industrial & Scientific Abrasive & Finishing Products Hand Files. Stanley.",
        "Tape. Industrial & Scientific Tapes Duct Tape. 3M.",
        "Broken />. Industrial & Scientific Fasteners Nut Sets. Boltsize-It.",
    ]
    pd.DataFrame({"itemID": range(6), "asin": list("abcdef"), "category_id": 0, "text": texts}).to_csv(
        src / "items.tsv", sep="\t", index=False
    )
    out = write_variant("no-category-text", src, tmp_path / "nocat", model=_Encoder())
    stripped = pd.read_csv(out.path / "items_nocategory.tsv", sep="\t")["text"].tolist()
    assert stripped == [
        "Glue, 15 g. Gorilla.",
        "Slides. CB.",
        "Reacher. Vive.",
        "File. Stanley.",
        "Tape. 3M.",
        "Broken />. Boltsize-It.",
    ]
    feats = np.load(out.path / "text_feat.npy")
    assert feats.shape == (6, 8)
    assert np.allclose(feats, _Encoder().encode(stripped, normalize_embeddings=True), atol=1e-6)
    assert out.sha256["text_feat.npy"] in (out.path / "SOURCE.md").read_text()
    with pytest.raises(DataError, match="no items.tsv"):
        write_variant(
            "no-category-text", write_mmrec(ds, tmp_path / "bare"), tmp_path / "x", model=_Encoder()
        )


# --------------------------------------------------------------------------- the command line
def _cli(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    from distillrec.cli import main

    monkeypatch.setattr("sys.argv", ["distillrec", *args])
    with pytest.raises(SystemExit) as exit_:
        main()
    out = capsys.readouterr()
    return int(exit_.value.code or 0), out.out, out.err


def test_diagnose_command_prints_the_verdicts_and_its_json_is_the_api_result(tmp_path, monkeypatch, capsys):
    run_dir = _seq_run(tmp_path, {"modality_input": True}, epochs=2)
    code, out, _ = _cli(monkeypatch, capsys, "diagnose", str(run_dir), "--json")
    assert code == 0
    result = json.loads(out)
    _check_schema(result)
    assert result == json.loads(json.dumps(diagnose(run_dir)))
    code, out, _ = _cli(monkeypatch, capsys, "diagnose", str(run_dir))
    assert code == 0 and all(result["methods"][m]["verdict"] in out for m in ("ckd", "sgfd", "cdl"))
    code, _, err = _cli(monkeypatch, capsys, "diagnose", str(tmp_path))
    assert code == 2 and err.count("error:") == 1 and "not a run folder" in err


def test_variant_command_writes_the_same_folder_as_the_api(tmp_path, monkeypatch, capsys):
    source = write_mmrec(make_dataset(n_users=20, n_items=25), tmp_path / "data")
    args = ["variant", "noise", "--source", str(source), "--snr-db", "5", "--seed", "3"]
    code, out, _ = _cli(monkeypatch, capsys, *args, "--out", str(tmp_path / "cli"))
    assert code == 0 and "wrote" in out and "image_feat.npy" in out
    api = write_variant("noise", source, tmp_path / "api", snr_db=5.0, seed=3)
    written = np.load(tmp_path / "cli" / "image_feat.npy")
    np.testing.assert_array_equal(written, np.load(api.path / "image_feat.npy"))
    code, _, err = _cli(monkeypatch, capsys, *args, "--out", str(tmp_path / "cli"))
    assert code == 2 and "not empty" in err  # refused without --force
    code, _, err = _cli(
        monkeypatch, capsys, "variant", "blur", "--source", str(source), "--out", str(tmp_path / "x")
    )
    assert code == 2 and "unknown variant kind" in err


# --------------------------------------------------------------------------- the proof (diagnose-proof)
def _outcome(value, change, helped, verdict="unlikely", run="run"):  # noqa: ANN001, ANN202
    from distillrec.diagnose.proof import Outcome

    return Outcome("ckd", "d", "b", "x.yaml", run, value, verdict, 0.3, change, None, 0.5, 5, helped)


def test_spearman_p_is_exact_for_few_cases():
    from distillrec.diagnose.proof import spearman

    rho, p, n = spearman([1.0, 2.0, 3.0], [0.1, 0.2, 0.3])
    assert (rho, n) == (pytest.approx(1.0), 3) and p == pytest.approx(2 / 6)  # 2 of 6 orderings reach |ρ| = 1
    assert spearman([1.0, 2.0, 3.0, 4.0], [0.1, 0.3, 0.2, 0.4])[0] == pytest.approx(0.8)
    assert spearman([1.0, 2.0], [0.1, 0.2]) == (None, None, 2)  # too few pairs


def test_left_out_verdicts_judge_each_case_by_the_others():
    from distillrec.diagnose.proof import left_out

    cases = left_out([_outcome(0.23, 0.03, False), _outcome(-0.02, 0.03, False), _outcome(0.38, 0.04, False)])
    # each threshold is the largest value among the other two (no case helped): 0.38, 0.38, then 0.23
    assert [c.loo_threshold for c in cases] == pytest.approx([0.38, 0.38, 0.23])
    assert [c.loo_verdict for c in cases] == ["unlikely", "unlikely", "likely to help"]
    assert [c.predicted for c in cases] == [True, True, False]
    # a mean over seeds whose interval holds the left-out threshold names no outcome
    from dataclasses import replace

    banded = left_out([replace(cases[0], interval=(0.2, 0.4)), *cases[1:]])
    assert banded[0].loo_verdict == "cannot tell" and banded[0].predicted is None
    (alone,) = left_out([_outcome(0.1, 0.0, False)])
    assert alone.loo_verdict == "cannot tell" and alone.predicted is None


def test_proof_names_a_diagnosed_folder_that_is_another_training_with_the_evidence_recorded_for_it():
    from dataclasses import replace

    from distillrec.diagnose.proof import markdown
    from distillrec.diagnose.thresholds import EVIDENCE

    (recorded,) = [c for c in EVIDENCE["ckd"] if "mmgcn@acdaab0722/seed1" in c.source]
    run = "experiments/state/runs/scientific/mmgcn@acdaab0722/seed1"
    same = replace(_outcome(0.43, 0.04, False, run=run), ledger_gap=0.0)
    assert same.reported_model and "†" not in markdown([same], [], "cmd")
    other = replace(same, ledger_gap=0.0024)
    text = markdown([other], [], "cmd")
    assert not other.reported_model and "| d | b | 0.43 † |" in text
    assert f"its quantity 0.43 here, {recorded.value:.4g} in the shipped evidence for this run" in text


def test_proof_summary_counts_verdicts_and_ranks_quantity_against_gain():
    from distillrec.diagnose.proof import left_out, markdown, summary

    cases = left_out(
        [
            _outcome(0.1, -0.01, False),
            _outcome(0.2, 0.00, False),
            _outcome(0.5, 0.04, True, "likely to help"),
            _outcome(0.6, 0.05, False, "likely to help"),
            _outcome(None, 0.01, False, "cannot tell"),  # named nothing, measured nothing
        ]
    )
    # left out: 0.1 -> t 0.6 unlikely (right); 0.2 -> t 0.6 unlikely (right); 0.5 -> t 0.6 unlikely (wrong);
    # 0.6 -> t 0.2 or 0.5 (both err once with the other three): the larger, 0.5, so likely (wrong)
    assert [c.loo_verdict for c in cases[:4]] == ["unlikely", "unlikely", "unlikely", "likely to help"]
    s = summary(cases)["ckd"]
    assert (s["cases"], s["helped"], s["verdicts_named"], s["verdicts_right"]) == (5, 1, 4, 2)
    assert s["spearman_n"] == 4 and s["spearman_rho"] == pytest.approx(1.0)
    assert s["threshold_refit"] == pytest.approx(0.6)  # 0.2 and 0.6 err once each: the larger, cautious one
    text = markdown(cases, ["x.yaml: d/other (pending)"], "distillrec diagnose-proof x.yaml")
    assert (
        "## CKD" in text and "helped in 1 of 5" in text and "Not finished yet" in text and "left-out" in text
    )
    assert text.count("| d | b |") == 5
    assert (
        "What would show" not in text
    )  # one case helped, none near its threshold, ρ positive: nothing to add
    # none helped, one case within a tenth of its left-out threshold, larger quantities with smaller changes
    unshown = left_out([_outcome(0.30, 0.01, False), _outcome(0.31, 0.00, False), _outcome(0.1, 0.02, False)])
    text = markdown(unshown, [], "c")
    assert "## What would show the advice predicts" in text and "A case where the method helps (CKD" in text
    assert "Sturdier quantities: 2 case(s)" in text and "A quantity that ranks the gains (CKD" in text


def test_proof_reads_a_finished_experiment_and_diagnoses_its_plain_run(tmp_path):
    """End to end on a tiny experiment: one comparison, diagnosed on the plain arm's first report seed."""
    import yaml

    from distillrec.diagnose.proof import collect, markdown, to_json
    from distillrec.experiment.engine import Engine
    from distillrec.training.checkpoint import write_json

    ds = make_dataset(n_users=60, n_items=50, per_user=8)
    ds.name = "tinyproof"
    folder = write_mmrec(ds, tmp_path / "data" / "tinyproof")
    values = {
        "datasets": [folder],
        "backbones": ["vbpr"],
        "methods": ["ckd"],
        "budget": 1,
        "selection_seeds": [1001],
        "seeds": [1, 2],
        "set": {"epochs": 2, "ckd.n_generic": 32},
        "out": str(tmp_path / "state"),
        "threads": 1,
        "bootstrap": 100,
        "controls": False,
    }
    file = tmp_path / "tiny.yaml"
    file.write_text(yaml.safe_dump(values))
    Engine(load_definition(file)).run()
    outcomes, pending = collect([file], train_teachers=True)
    assert pending == [] and len(outcomes) == 1
    (o,) = outcomes
    assert (o.method, o.backbone, o.dataset) == ("ckd", "vbpr", "tinyproof")
    assert o.verdict in {"likely to help", "unlikely"} and o.value is not None  # the teachers were trained
    assert Path(o.run).parent.name.startswith("vbpr@") and Path(o.run).name == "seed1"
    payload = json.loads(json.dumps(to_json(outcomes, pending), default=float))
    assert payload["summary"]["ckd"]["cases"] == 1
    assert payload["outcomes"][0]["loo_verdict"] == "cannot tell"  # no other case to fit a threshold to
    assert payload["outcomes"][0]["predicted"] is None
    # A fresh checkout has the ledger but not the run folders: the plain run is trained again, to the
    # ledger's very figures, and diagnosed to the same quantity; without retraining it is named as missing.
    import shutil

    assert not o.recorded and (tmp_path / "state" / "diagnoses.jsonl").read_text().count("\n") == 1
    shutil.rmtree(Path(o.run))
    # the quantity measured above is read back from the state's record: nothing to train
    (kept,), pending = collect([file], train_teachers=True, retrain=False)
    assert pending == [] and kept.recorded and kept.value == o.value and kept.run == o.run
    assert not Path(o.run).exists() and "1 of the 1 here were read from there" in markdown([kept], [], "c")
    assert collect([file], train_teachers=True, retrain=False, remeasure=True)[1] == [
        f"{file}: tinyproof/vbpr: no plain report run folder to diagnose"
    ]
    again, pending = collect([file], train_teachers=True, remeasure=True)
    assert pending == [] and again[0].value == o.value and (Path(o.run) / "metrics.json").exists()
    assert o.ledger_gap == 0.0 and again[0].ledger_gap == 0.0 and again[0].reported_model
    assert not again[0].recorded
    # A folder holding another model of the specification (here its test figures edited) is named as such,
    # whichever invocation trained it: the diagnosis then reads a model the comparison does not report.
    metrics_file = Path(o.run) / "metrics.json"
    metrics = json.loads(metrics_file.read_text())
    metrics["test"]["recall@20"] += 0.004
    write_json(metrics_file, metrics)
    drifted, pending = collect([file], train_teachers=True, remeasure=True)
    assert pending == [] and not drifted[0].reported_model
    assert abs(drifted[0].ledger_gap - 0.004) < 1e-9
    text = markdown(drifted, pending, "distillrec diagnose-proof tiny.yaml")
    assert "† Diagnosed models that are not the reported ones" in text and "differs by up to 0.004" in text
    assert f"| {drifted[0].dataset} | vbpr | {drifted[0].value:.4g} †" in text
    assert "Not finished yet" not in text
    # the last measurement of a run replaces the earlier ones; a line cut by a writer is not a record, and
    # the next record starts a line of its own
    from dataclasses import replace

    from distillrec.diagnose.records import DiagnosisRecords

    with (tmp_path / "state" / "diagnoses.jsonl").open("a") as f:
        f.write('{"record": "cut')
    (latest,), _ = collect([file], train_teachers=True, retrain=False)
    assert latest.recorded and latest.ledger_gap == drifted[0].ledger_gap
    records = DiagnosisRecords(tmp_path / "state")
    (only,) = records
    records.add(replace(only, value=0.5))
    again = DiagnosisRecords(tmp_path / "state")
    assert len(again) == 1 and again.get(only.record, "ckd", only.quantity).value == 0.5
    assert collect([file], train_teachers=True, retrain=False)[0][0].value == 0.5
    # over both report seeds: seed 1 read from its record, seed 2 measured (teachers of its own seed), and
    # their mean judged; both are kept
    (both,), pending = collect([file], train_teachers=True, seeds=2)
    assert pending == [] and len(both.values) == 2 and both.values[0] == 0.5 and not both.recorded
    assert both.value == pytest.approx(np.mean(both.values)) and both.interval is not None
    assert len(DiagnosisRecords(tmp_path / "state")) == 2
    assert collect([file], train_teachers=True, retrain=False, seeds=2)[0][0].recorded
    assert "first 2 report-seed runs, their mean judged" in markdown([both], [], "c")
