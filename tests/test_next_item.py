"""The next-item task: splits, lazily built prefixes, full-ranking metrics, and the sequential backbones
(each checked against a plain padded computation, since they skip padding for speed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from distillrec.data.dataset import Dataset, Sequences, interactions_to_csr
from distillrec.data.next_item import (
    PrefixSampler,
    check_chronological,
    event_users,
    sample_events,
    split_sequences,
    truncate,
    with_sequence_split,
)
from distillrec.errors import DataError
from distillrec.eval.next_item import NextItemEvaluator, metrics_from_ranks, target_ranks
from distillrec.models.registry import build_model, model_names
from distillrec.models.sequential.mmsr import sequence_graph
from distillrec.training.config import TrainConfig
from distillrec.training.next_item import NextItemTask

SEQUENTIAL = model_names("next-item")


pytestmark = pytest.mark.usefixtures("one_thread")


def make_seq_dataset(
    n_users: int = 40,
    n_items: int = 60,
    min_len: int = 4,
    max_len: int = 12,
    seed: int = 0,
    modalities: dict[str, int] | None = None,
) -> Dataset:
    """Random histories (repeats possible) with a leave-one-out split and random features."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(min_len, max_len + 1, n_users)
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    items = rng.integers(0, n_items, int(offsets[-1])).astype(np.int64)
    seq = split_sequences(Sequences(items, offsets, np.zeros(len(items), dtype=np.int8)), "loo")
    users = event_users(seq)
    parts = [
        interactions_to_csr(users[seq.label == p], items[seq.label == p], n_users, n_items) for p in range(3)
    ]
    g = torch.Generator().manual_seed(seed)
    modalities = {"image": 16, "text": 12} if modalities is None else modalities
    feats = {m: torch.rand(n_items, d, generator=g) for m, d in modalities.items()}
    return Dataset("synthetic-seq", n_users, n_items, *parts, features=feats, sequences=seq)


def write_seq_inter(ds: Dataset, folder) -> None:  # noqa: ANN001
    """The dataset's ordered histories as `<name>.seq.inter` (x_label and position per event)."""
    import pandas as pd

    seq = ds.sequences
    users = event_users(seq)
    position = np.arange(len(users)) - seq.offsets[users]
    events = pd.DataFrame({"userID": users, "itemID": seq.items, "x_label": seq.label, "position": position})
    folder.mkdir(parents=True, exist_ok=True)
    events.to_csv(folder / f"{ds.name}.seq.inter", sep="\t", index=False)
    pairs = events.drop_duplicates(["userID", "itemID"])[["userID", "itemID", "x_label"]]
    pairs.to_csv(folder / f"{ds.name}.inter", sep="\t", index=False)
    for m, f in ds.features.items():
        np.save(folder / f"{m}_feat.npy", f.numpy().astype(np.float32))


def _seq(lengths: list[int]) -> Sequences:
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    items = np.arange(offsets[-1], dtype=np.int64) % 7
    return Sequences(items, offsets, np.zeros(offsets[-1], dtype=np.int8))


# --------------------------------------------------------------------------- splits
def test_loo_split_labels():
    seq = split_sequences(_seq([1, 2, 3, 5]), "loo")
    assert seq.label.tolist() == [0, 0, 2, 0, 1, 2, 0, 0, 0, 1, 2]


def test_ratio_split_is_chronological_and_sized():
    seq = split_sequences(_seq([10, 20, 3]), "ratio", (0.8, 0.1, 0.1))
    lab = seq.label
    assert lab[:10].tolist() == [0] * 8 + [1, 2]
    assert lab[10:30].tolist() == [0] * 16 + [1, 1, 2, 2]
    assert lab[30:].tolist() == [0, 1, 2]
    check_chronological(seq)


def test_non_chronological_labels_are_refused():
    seq = _seq([4])
    seq.label[:] = [0, 2, 0, 1]
    with pytest.raises(DataError, match="chronological"):
        check_chronological(seq)


def test_with_sequence_split_rebuilds_parts():
    ds = make_seq_dataset(min_len=20, max_len=30)
    ratio = with_sequence_split(ds, "ratio", (0.8, 0.1, 0.1))
    assert ratio.split_hash != ds.split_hash
    assert ratio.test.nnz > 0 and ratio.sequences.label.max() == 2


# --------------------------------------------------------------------------- prefixes
def test_prefixes_match_a_plain_loop():
    ds = make_seq_dataset(max_len=15)
    seq = ds.sequences
    for split in ("train", "valid", "test"):
        sampler = PrefixSampler(seq, ds.n_items, split, max_len=5)
        batch = sampler.batch(np.arange(len(sampler)))
        expected = []
        for u in range(ds.n_users):
            lo, hi = seq.offsets[u], seq.offsets[u + 1]
            for e in range(lo + 1, hi):
                if seq.label[e] == {"train": 0, "valid": 1, "test": 2}[split]:
                    expected.append((seq.items[max(lo, e - 5) : e].tolist(), int(seq.items[e]), u))
        assert len(expected) == len(sampler)
        for row, (prefix, target, user) in enumerate(expected):
            n = int(batch.lengths[row])
            assert batch.items[row, :n].tolist() == prefix
            assert (batch.items[row, n:] == ds.n_items).all()  # right padding
            assert int(batch.target[row]) == target and int(batch.users[row]) == user
        assert batch.items.shape[1] == int(batch.lengths.max())


def test_sampler_keeps_only_index_arrays():
    ds = make_seq_dataset()
    sampler = PrefixSampler(ds.sequences, ds.n_items, "train")
    arrays = [v for v in vars(sampler).values() if isinstance(v, np.ndarray)]
    assert all(a.ndim == 1 and len(a) == len(sampler) for a in arrays)
    g = torch.Generator().manual_seed(0)
    seen = torch.cat([b.target for b in sampler.epoch(16, g)])
    assert len(seen) == len(sampler)


def test_first_events_are_never_targets():
    seq = split_sequences(_seq([2, 1]), "loo")
    assert sample_events(seq, "test").tolist() == [1]  # user 1's only event has no prefix
    assert sample_events(seq, "train").tolist() == []


def test_truncate_keeps_newest_left_aligned():
    items = torch.tensor([[1, 2, 3, 4, 9], [5, 6, 9, 9, 9]])
    out, n = truncate(items, torch.tensor([4, 2]), 3, pad=9)
    assert out.tolist() == [[2, 3, 4], [5, 6, 9]] and n.tolist() == [3, 2]


# --------------------------------------------------------------------------- metrics
def test_ranks_and_metrics_by_hand():
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.3], [0.2, 0.2, 0.2, 0.2], [1.0, 0.0, 0.0, 0.5]])
    ranks = target_ranks(scores, torch.tensor([2, 1, 0]))
    assert ranks.tolist() == [1, 3, 0]  # ties count against the target
    m = metrics_from_ranks(ranks, [1, 2, 4])
    assert m["hit@1"].tolist() == [0, 0, 1]
    assert m["hit@2"].tolist() == [1, 0, 1] and torch.equal(m["recall@2"], m["hit@2"])
    assert m["ndcg@2"][0].item() == pytest.approx(1 / math.log2(3))
    assert m["mrr@4"].tolist() == pytest.approx([0.5, 0.25, 1.0])
    assert m["ndcg@4"][1].item() == pytest.approx(1 / math.log2(5))


def test_history_mask_removes_history_but_not_the_target():
    seq = Sequences(np.array([0, 1, 2, 1]), np.array([0, 4]), np.array([0, 0, 0, 2], dtype=np.int8))
    sampler = PrefixSampler(seq, 5, "test")
    scores = torch.tensor([[9.0, 1.0, 8.0, 7.0, 0.0]])  # target item 1 (a repeat) ranks 4th unmasked

    def fn(items, lengths):
        return scores.expand(len(items), -1).clone()

    plain = NextItemEvaluator({"test": sampler}, 5, (1, 2), mask_history=False).evaluate(fn, "test")
    masked = NextItemEvaluator({"test": sampler}, 5, (1, 2), mask_history=True).evaluate(fn, "test")
    assert plain["hit@2"] == 0.0
    assert masked["hit@1"] == 0.0 and masked["hit@2"] == 1.0  # items 0, 2 masked, item 3 stays


# --------------------------------------------------------------------------- backbones
def _padded_sasrec(model, rep, items, lengths):
    """SASRec over the full padded batch with a causal mask: the plain computation."""
    x = rep.extras["input"][items] + model.pos_emb.weight[: items.shape[1]]
    x = model.ln(x)
    for block in model.blocks:
        b, n, d = x.shape
        q, k, v = block.qkv(x).view(b, n, 3, block.heads, d // block.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, n, d)
        x = block.ln1(x + block.out(a))
        x = block.ln2(x + block.ffn2(F.gelu(block.ffn1(x))))
    return x[torch.arange(len(items)), lengths - 1]


def _batch(ds, split="train"):
    sampler = PrefixSampler(ds.sequences, ds.n_items, split)
    return sampler.batch(np.arange(len(sampler)))


@pytest.mark.parametrize("name", ["sasrec", "sasrm"])
def test_sasrec_flat_tokens_equal_padded_computation(name):
    ds = make_seq_dataset(max_len=20)
    torch.manual_seed(0)
    model = build_model(name, ds).eval()
    batch = _batch(ds)
    with torch.no_grad():
        rep = model.represent(ds.features)
        fast = model.encode(rep, batch.items, batch.lengths)
        slow = _padded_sasrec(model, rep, batch.items, batch.lengths)
    assert torch.allclose(fast, slow, atol=1e-5)


def test_gru4rec_packed_equals_padded():
    ds = make_seq_dataset()
    torch.manual_seed(0)
    model = build_model("gru4rec", ds).eval()
    batch = _batch(ds)
    with torch.no_grad():
        rep = model.represent(ds.features)
        out, _ = model.gru(rep.extras["input"][batch.items])
        slow = model.dense(out[torch.arange(len(batch.items)), batch.lengths - 1])
        assert torch.allclose(model.encode(rep, batch.items, batch.lengths), slow, atol=1e-5)


@pytest.mark.parametrize("name", SEQUENTIAL)
def test_extra_padding_changes_nothing(name):
    ds = make_seq_dataset()
    torch.manual_seed(0)
    model = build_model(name, ds).eval()
    batch = _batch(ds)
    wide = torch.cat([batch.items, torch.full((len(batch.items), 7), ds.n_items)], 1)
    with torch.no_grad():
        rep = model.represent(ds.features)
        a = model.encode(rep, batch.items, batch.lengths)
        b = model.encode(rep, wide, batch.lengths)
        one = model.encode(rep, batch.items[:1, : int(batch.lengths[0])], batch.lengths[:1])
    assert torch.allclose(a, b, atol=1e-5)
    assert torch.allclose(a[:1], one, atol=1e-5)  # a row alone encodes as in the batch
    scores = model.score_sequences(rep, a)
    assert scores.shape == (len(batch.items), ds.n_items) and torch.isfinite(scores).all()


def test_sequence_graph_relations_by_hand():
    # items 5 -> 6 -> 5 -> 7 then padding: nodes at positions 0 (item 5), 1 (6), 3 (7)
    items = torch.tensor([[5, 6, 5, 7, 0]])
    node, rel = sequence_graph(items, torch.tensor([4]))
    assert node[0, :4].tolist() == [0, 1, 0, 3]
    r = rel[0]
    assert r[0, 0] == 1 and r[1, 1] == 1 and r[3, 3] == 1 and r[2, 2] == 0  # position 2 is not a node
    assert r[0, 1] == 4 and r[1, 0] == 4  # 5 -> 6 and 6 -> 5
    assert r[0, 3] == 2 and r[3, 0] == 3  # 5 -> 7
    assert r[1, 3] == 0 and r[4].abs().sum() == 0


@pytest.mark.parametrize("name", SEQUENTIAL)
def test_training_lowers_the_loss(name):
    ds = make_seq_dataset(n_users=60, n_items=30)
    torch.manual_seed(0)
    model = build_model(name, ds)
    cfg = TrainConfig(batch_size=64, seed=0, valid_metric="mrr@10", ks=[5, 10, 20], lr=5e-3)
    task = NextItemTask(ds, cfg, torch.device("cpu"), True)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(8):
        total = 0.0
        for batch in task.batches(g):
            loss = model.loss(model.represent(ds.features), batch)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach())
        losses.append(total)
    assert losses[-1] < losses[0]
    model.eval()
    result = task.evaluate(model, ds.features, "test")
    assert set(result) >= {"hit@5", "ndcg@20", "mrr@10", "recall@20"}


def test_train_api_writes_a_next_item_run(tmp_path):
    from distillrec.experiment.api import train

    ds = make_seq_dataset()
    res = train("sasrec", ds, seeds=[1], set={"epochs": 2}, out=tmp_path)[0]
    assert (res.run_dir / "history.csv").exists()
    assert res.metrics["valid_metric"] == "mrr@10"
    assert {"hit@5", "hit@20", "ndcg@5", "mrr@20"} <= set(res.metrics["test"])


def test_strict_preset_masks_the_history_in_training_and_in_a_loaded_run(tmp_path):
    from distillrec.experiment.api import load_run, train
    from distillrec.training.next_item import evaluate_next

    ds = make_seq_dataset()
    cfg = TrainConfig(ks=[5, 10, 20], valid_metric="mrr@10")
    assert not NextItemTask(ds, cfg, torch.device("cpu"), True).evaluator.mask_history  # RecBole's protocol
    strict = cfg.model_copy(update={"preset": "strict"})
    assert NextItemTask(ds, strict, torch.device("cpu"), True).evaluator.mask_history
    write_seq_inter(ds, tmp_path / "seqdata")
    res = train("gru4rec", str(tmp_path / "seqdata"), seeds=[1], set={"epochs": 1}, out=tmp_path / "runs")[0]
    run = load_run(res.run_dir, device="cpu")
    model, feats = run.model, run.features
    masked = evaluate_next(model, run.dataset, feats, "test", run.train_config.ks, mask_history=True)
    plain = evaluate_next(model, run.dataset, feats, "test", run.train_config.ks, mask_history=False)
    assert run.evaluate("test", preset="strict") == masked
    assert run.evaluate("test") == plain == run.evaluate("test", preset="mmrec")
    assert masked != plain  # some targets' ranks move once the history is masked


def test_modality_models_warm_up_their_tables():
    ds = make_seq_dataset()
    model = build_model("mmsr", ds, {"warmup_gamma": 4.0, "warmup_epochs": 2})
    names = [g["name"] for g in model.param_groups(1e-3)]
    assert names == ["model", "modality"]
    assert model.lr_multipliers(1) == {"modality": 0.25}
    assert model.lr_multipliers(3) == {"modality": 1.0}
    assert build_model("sasrec", ds).lr_multipliers(1) == {}


def test_recommend_next_continues_the_whole_history():
    from distillrec.training.next_item import recommend_next

    ds = make_seq_dataset()
    torch.manual_seed(0)
    model = build_model("sasrec", ds).eval()
    users = np.array([0, 5])
    top = recommend_next(model, ds, ds.features, users, k=5)
    seq = ds.sequences
    with torch.no_grad():
        rep = model.represent(ds.features)
        for row, u in enumerate(users):
            hist = torch.from_numpy(seq.items[seq.offsets[u] : seq.offsets[u + 1]])[None]
            scores = model.score_sequences(rep, model.encode(rep, hist, torch.tensor([hist.shape[1]])))
            assert top[row].tolist() == torch.topk(scores[0], 5).indices.tolist()
    unseen = recommend_next(model, ds, ds.features, users, k=5, exclude_seen=True)
    for row, u in enumerate(users):
        assert not set(unseen[row].tolist()) & set(seq.items[seq.offsets[u] : seq.offsets[u + 1]].tolist())


def test_cdl_experiment_compares_hit_at_20_with_the_forgetting_section(tmp_path):
    from distillrec.experiment.definition import make_definition
    from distillrec.experiment.engine import Engine
    from distillrec.experiment.report import comparisons, markdown, to_json

    ds = make_seq_dataset()
    folder = tmp_path / "data" / ds.name
    write_seq_inter(ds, folder)
    d = make_definition(
        {
            "datasets": [str(folder)],
            "backbones": ["mmsr"],
            "methods": ["cdl"],
            "budget": 1,
            "selection_seeds": [11],
            "seeds": [1, 2],
            "controls": False,
            "bootstrap": 200,
            "set": {"epochs": 1, "cdl.sample_pairs": 2000},
            "out": str(tmp_path / "exp"),
        }
    )
    result = Engine(d).run()
    comps = comparisons(result)
    assert comps[0].metric == "hit@20" and to_json(result, comps)["comparisons"][0]["metric"] == "hit@20"
    assert "Modality forgetting" in markdown(result, comps, "test")


def test_evaluate_next_matches_the_trainer():
    from distillrec.training.next_item import evaluate_next

    ds = make_seq_dataset()
    torch.manual_seed(0)
    model = build_model("gru4rec", ds)
    cfg = TrainConfig(valid_metric="mrr@10", ks=[5, 10, 20])
    task = NextItemTask(ds, cfg, torch.device("cpu"), True)
    model.eval()
    assert evaluate_next(model, ds, ds.features, "valid") == task.evaluate(model, ds.features, "valid")


def test_the_samplers_keep_the_models_own_window():
    """A model's max_len above 50 reaches the samplers: with users of 80 events and max_len 100, training
    prefixes of up to 77 events and test prefixes of 79 reach the model (max_len 50: cut to 50)."""
    from distillrec.training.next_item import evaluate_next
    from distillrec.training.trainer import Trainer

    ds = make_seq_dataset(
        n_users=6, n_items=30, min_len=80, max_len=80
    )  # loo: 78 train, 1 valid, 1 test each
    cfg = TrainConfig(epochs=1, batch_size=64, valid_metric="mrr@10", ks=[5, 10, 20])
    for window in (100, 50):
        torch.manual_seed(0)
        model = build_model("sasrec", ds, {"max_len": window})
        assert model.input_window == window
        trainer = Trainer(model, ds, cfg, quiet=True)
        train_widths = [b.items.shape[1] for b in trainer.task.batches(torch.Generator().manual_seed(0))]
        assert max(train_widths) == min(window, 77)
        seen: list[tuple[int, int]] = []
        encode = model.encode

        def recording(rep, items, lengths, encode=encode, seen=seen):  # noqa: ANN001, ANN202
            seen.append((items.shape[1], int(lengths.max())))
            return encode(rep, items, lengths)

        model.encode = recording
        result = trainer.evaluate("test")
        assert seen == [(min(window, 79), min(window, 79))]  # the model reads the whole 79-event history
        seen.clear()
        assert (
            evaluate_next(model, ds, ds.features, "test", ks=cfg.ks) == result
        )  # the same window by default
        assert seen == [(min(window, 79), min(window, 79))]
