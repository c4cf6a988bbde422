"""Next-item samples from ordered user histories: splits, and prefixes built per batch.

A sample is one event e of a user (the target) with the events before it as input, truncated to the
last `max_len`. Nothing is materialised per sample beyond index arrays: a batch gathers its prefixes
from the flat event array with one broadcast, so memory is O(batch x longest prefix in the batch).

Padding is at the right ("left-aligned" sequences): position 0 holds the oldest kept event, position
length-1 the newest, then padding (id `n_items`) up to the batch's longest prefix. This is RecBole's
layout, so learned position embeddings index the same positions, and a causal model never attends to
padding (it comes after every real position), so no padding mask is needed inside attention.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import Tensor

from distillrec.data.dataset import Dataset, Sequences, interactions_to_csr
from distillrec.data.split import TEST, TRAIN, VALID, holdout_sizes
from distillrec.errors import ConfigError, DataError

SPLIT_LABEL = {"train": TRAIN, "valid": VALID, "test": TEST}
SCHEMES = ("x_label", "loo", "ratio")


@dataclass
class SeqBatch:
    """Left-aligned prefixes and their next items, on one device."""

    items: Tensor  # int64 [B, L], padding = n_items
    lengths: Tensor  # int64 [B], 1 <= lengths <= L
    target: Tensor  # int64 [B]
    users: Tensor  # int64 [B]

    def to(self, device: torch.device | str) -> SeqBatch:
        return SeqBatch(*(t.to(device) for t in (self.items, self.lengths, self.target, self.users)))

    @property
    def mask(self) -> Tensor:
        """[B, L] True at real (non-padding) positions."""
        return torch.arange(self.items.shape[1], device=self.items.device) < self.lengths[:, None]


def event_users(seq: Sequences) -> np.ndarray:
    """User id of every event."""
    return np.repeat(np.arange(len(seq.offsets) - 1), np.diff(seq.offsets))


def check_chronological(seq: Sequences, source: str = "sequences") -> None:
    """Labels must be train*, valid*, test* in each user's order, or a training prefix would hold
    held-out events (and an evaluation would look into the future)."""
    lab = seq.label.astype(np.int64)
    users = event_users(seq)
    same_user = users[1:] == users[:-1]
    bad = np.flatnonzero(same_user & (lab[1:] < lab[:-1]))
    if len(bad):
        u = int(users[bad[0]])
        raise DataError(
            f"{source}: user {u} has a {('train', 'valid', 'test')[lab[bad[0]]]} event before a "
            f"{('train', 'valid', 'test')[lab[bad[0] + 1]]} one; next-item splits must be chronological"
        )


def split_sequences(
    seq: Sequences, scheme: str = "x_label", ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> Sequences:
    """Sequences with new labels.

    x_label: keep the labels the data came with; loo: last event test, second-last valid (a user with
    two events gives one to test, with one keeps it for training); ratio: per user in time order, the
    last share `ratios[2]` is test and the share `ratios[1]` before it valid (sizes as `holdout_sizes`,
    so 80/10/10 holds out a fifth of each history, halved between valid and test).
    """
    if scheme not in SCHEMES:
        raise ConfigError(f"unknown next-item split {scheme!r}; choose one of {', '.join(SCHEMES)}")
    if scheme == "x_label":
        check_chronological(seq)
        return seq
    sizes = np.diff(seq.offsets)
    if scheme == "loo":
        n_test = (sizes >= 2).astype(np.int64)
        n_valid = (sizes >= 3).astype(np.int64)
    else:
        if len(ratios) != 3 or min(ratios) < 0 or abs(sum(ratios) - 1) > 1e-6 or ratios[0] <= 0:
            raise ConfigError(f"split ratios must be three non-negative numbers summing to 1, got {ratios}")
        n_valid, n_test = holdout_sizes(sizes, ratios[1], ratios[2])
    users = event_users(seq)
    from_end = seq.offsets[users + 1] - np.arange(len(users))  # 1 = the user's last event
    label = np.full(len(users), TRAIN, dtype=np.int8)
    label[from_end <= (n_test + n_valid)[users]] = VALID
    label[from_end <= n_test[users]] = TEST
    return Sequences(items=seq.items, offsets=seq.offsets, label=label)


def with_sequence_split(
    dataset: Dataset, scheme: str = "loo", ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> Dataset:
    """A copy of `dataset` whose sequences carry a new split; its CSR parts are rebuilt from the events
    (a pair in several parts counts in each), so the run's split hash records the choice."""
    if dataset.sequences is None:
        raise DataError(f"dataset {dataset.name!r} has no ordered histories (<name>.seq.inter)")
    seq = split_sequences(dataset.sequences, scheme, ratios)
    users = event_users(seq)
    parts = [
        interactions_to_csr(
            users[seq.label == p], seq.items[seq.label == p], dataset.n_users, dataset.n_items
        )
        for p in (TRAIN, VALID, TEST)
    ]
    return replace(dataset, sequences=seq, train=parts[0], valid=parts[1], test=parts[2])


def sample_events(seq: Sequences, split: str) -> np.ndarray:
    """Indices of the events that are targets of `split`: events of that label with at least one
    earlier event of the same user (a first event has no input)."""
    if split not in SPLIT_LABEL:
        raise ConfigError(f"unknown split {split!r}; choose train, valid or test")
    users = event_users(seq)
    has_prefix = np.arange(len(users)) > seq.offsets[users]
    return np.flatnonzero((seq.label == SPLIT_LABEL[split]) & has_prefix)


def gather_prefixes(
    items: np.ndarray, starts: np.ndarray, ends: np.ndarray, pad: int
) -> tuple[np.ndarray, np.ndarray]:
    """Left-aligned matrix of items[starts[b]:ends[b]] padded with `pad` to the longest row."""
    lengths = (ends - starts).astype(np.int64)
    width = int(lengths.max()) if len(lengths) else 0
    cols = np.arange(width)
    pos = starts[:, None] + cols[None, :]
    real = cols[None, :] < lengths[:, None]
    out = np.where(real, items[np.minimum(pos, len(items) - 1)], pad)
    return out.astype(np.int64), lengths


class PrefixSampler:
    """Next-item samples of one split, as `SeqBatch`es built on demand.

    Only the target event indices are kept; the prefix of event e is the user's events
    [max(start, e - max_len), e).
    """

    def __init__(self, seq: Sequences, n_items: int, split: str, max_len: int = 50) -> None:
        if max_len < 1:
            raise ConfigError(f"max_len must be >= 1, got {max_len}")
        self.seq = seq
        self.pad = n_items
        self.max_len = max_len
        self.events = sample_events(seq, split)
        users = event_users(seq)
        self.users = users[self.events]
        self.starts = np.maximum(seq.offsets[self.users], self.events - max_len)

    def __len__(self) -> int:
        return len(self.events)

    def batch(self, rows: np.ndarray) -> SeqBatch:
        """The samples at positions `rows` of this sampler."""
        e = self.events[rows]
        items, lengths = gather_prefixes(self.seq.items, self.starts[rows], e, self.pad)
        return SeqBatch(
            torch.from_numpy(items),
            torch.from_numpy(lengths),
            torch.from_numpy(self.seq.items[e].astype(np.int64)),
            torch.from_numpy(self.users[rows].astype(np.int64)),
        )

    def history(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(row index, item) of every event before each sample's target, untruncated: what a
        history mask removes."""
        e = self.events[rows]
        starts = self.seq.offsets[self.users[rows]]
        counts = e - starts
        row_of = np.repeat(np.arange(len(rows)), counts)
        first = np.repeat(np.cumsum(counts) - counts, counts)
        pos = np.repeat(starts, counts) + (np.arange(int(counts.sum())) - first)
        return row_of, self.seq.items[pos]

    def epoch(self, batch_size: int, generator: torch.Generator) -> Iterator[SeqBatch]:
        """Every sample once, in an order drawn from `generator`."""
        perm = torch.randperm(len(self), generator=generator).numpy()
        for s in range(0, len(perm), batch_size):
            yield self.batch(perm[s : s + batch_size])


def truncate(items: Tensor, lengths: Tensor, max_len: int, pad: int) -> tuple[Tensor, Tensor]:
    """Keep the newest `max_len` events of left-aligned rows (for a model whose window is shorter
    than the sampler's); rows stay left-aligned."""
    if items.shape[1] <= max_len:
        return items, lengths
    new_len = lengths.clamp(max=max_len)
    cols = torch.arange(max_len, device=items.device)
    src = (lengths - new_len)[:, None] + cols[None, :]
    out = items.gather(1, src.clamp(max=items.shape[1] - 1))
    return torch.where(cols[None, :] < new_len[:, None], out, torch.full_like(out, pad)), new_len
