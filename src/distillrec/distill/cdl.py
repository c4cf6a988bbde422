"""KDSR's correlation distillation (CDL; Hu et al., ECIR 2024), on the fly and per co-occurring pair.

Teacher (frozen, per modality m): the features' linear-autoencoder codes z (see
`models.sequential.base.fit_linear_autoencoder`). For an item pair (i, j):
  holistic  C_ij = sim(z_i, z_j)  (cosine by default; dot, Euclidean or Manhattan distance as options)
  dissected Q_ij = nearest codeword to [sim(z_i^(1), z_j^(1)), …, sim(z_i^(D), z_j^(D))], z cut into D
            contiguous parts; the K codewords are fitted before training on pairs sampled from the
            training sequences, by online vector quantisation (EMA codeword updates) or by k-means.
Student, on the backbone's `correlation_tables` (its trainable modality embeddings e):
  P_ij = sim(W e_i, W e_j);  L_hol = mean over pairs of (P_ij/τ − C_ij/τ)²  (the soft match)
  logits_ij = W_2 ReLU(W_1 (e_i − e_j));  L_code = CE(logits_ij, Q_ij)
Loss added to the backbone's: Σ_m (α L_hol^m + β L_code^m), α = `holistic_weight`, β = `code_weight`.

Backbones: CDL supervises modality tables, so a backbone must have them (`MODALITY_TABLES`: the
`HasCorrelationTables` protocol on a model that reads item features with its options): MMSR and SASRM
always do; GRU4Rec and SASRec do with `modality_input: true` (KDSR's Fig. 3: ID embedding + trainable
modality tables initialised from the compressed features). On a backbone without them CDL is refused
by `registry.check_distill`, before any run folder is made, unless `id_only: true`, which supervises
the ID table (`CORRELATION_TABLES`; the earlier behaviour: content added to an ID-only model, not the
paper's method). The option lives on the model, not on CDL, so that a plain run and a CDL run of one
configuration are the same model. The heads' width (`correlation_dim`) is read off one throwaway
backbone, built only when a term is on, under CDL's own seed (each model names its width its own way).

Pairs are the positions p < q of each input prefix holding different items, so one batch builds a
[B, L, L] mask and per-pair tensors of length ≤ B·L(L−1)/2 — never an items × items table (the
official code precomputes dense N × N float64 and int64 tables per modality and k-means over all N²
pairs). The signed difference e_i − e_j follows the sequence's order (earlier minus later), the
paper's "directional relation"; `code_input: abs` is the official code's |e_i − e_j|.

Holistic form (`holistic`): `mean`, the per-pair mean above (the paper's text), or `frobenius`, the
official code's: per sequence the Frobenius norm of sqrt((P/τ − C/τ)² + 1e-8) over its pair matrix
(both orders of each pair), averaged over the batch's sequences. Not normalised by the pair count,
`frobenius` is about 5x stronger per pair at the same α on `scientific`, and the paper's weights (1,
0.5) were set with it; α and β are searched up to 10 to cover both forms. `legacy_frobenius: true` is
the earlier name of `holistic: frobenius`.

Official-code behaviours available as options: `legacy_weight_wiring` (two modalities: the first
modality's code term weighted by the holistic weight and the second's holistic term by the code
weight, as its loss is wired), `legacy_constant_ratio` (the modality tables' lr fixed at lr/γ instead
of warmed up).

Asynchronous training: through `lr_multipliers` the backbone's "modality" parameter group rises from
lr/γ to lr over the first E epochs (a no-op for backbones without modality tables). It is part of the
method and a CDL option (`async_warmup`, `warmup_gamma`, `warmup_epochs`); the backbones' own
`warmup_gamma` (MMSR, SASRM; 1 = off by default) is a separate model option.

Search space, off point and control (see `distill.base`): α = `holistic_weight` and β = `code_weight`
∈ {0, 0.1, 0.5, 1, 5, 10}; off at α = β = 0 with `async_warmup: false` (no term, no teacher fitted, no
schedule: the student trains as the plain backbone). Control `warmup_only`: α = β = 0 with the warm-up on,
so that a gain can be attributed to the distillation or to the warm-up. A term whose weight is 0 is not
computed; with both weights 0 the teacher (codes, codebooks) is not fitted.

Modality forgetting: every epoch CDL logs the diagnostic of `distill.forgetting` (forget_corr, id_corr,
code_corr under CDL's similarity, and cdl_corr where its holistic term is on), through a
`ForgettingDiagnostic` it holds.

Layout: pair geometry and sampling in `distill.pairs`, the codebook algorithms in `distill.quantize`, the
forgetting diagnostic and the `HasCorrelationTables` protocol in `distill.forgetting`; this module holds
the method (options, teacher, student heads, loss terms, warm-up).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator
from torch import Tensor, nn

from distillrec.data.dataset import Dataset
from distillrec.data.next_item import SeqBatch
from distillrec.distill.base import Capability, Distiller
from distillrec.distill.forgetting import (
    CORRELATION_TABLES,
    ForgettingDiagnostic,
    HasCorrelationTables,
    ProbeOptions,
)
from distillrec.distill.pairs import (
    Similarity,
    cooccurring_pairs,
    dissected_vectors,
    pair_similarity,
    part_bounds,
    sample_training_pairs,
)
from distillrec.distill.quantize import QUANTIZERS, assign_codes
from distillrec.distill.registry import register_distiller
from distillrec.errors import ConfigError
from distillrec.models.base import Batch, Recommender, Representation
from distillrec.models.schedules import AsyncWarmup, warmup_factors
from distillrec.models.sequential.base import MODALITY_GROUP, compress_features

MODALITY_TABLES = Capability(
    "modality tables (trainable item embeddings per modality, its correlation_tables, which it supervises)",
    HasCorrelationTables,
    features=True,
    otherwise="; or set cdl.id_only=true (supervise its ID table instead)",
)


class CDLOptions(ProbeOptions):
    similarity: Similarity = "cosine"
    parts: int = Field(8, ge=1, description="D: parts of the code for the dissected correlations")
    codes: int = Field(50, ge=2, description="K: codebook size")
    quantizer: Literal["vq", "kmeans"] = "vq"
    sample_pairs: int = Field(100000, ge=100, description="training pairs sampled to fit the codebook")
    tau: float = Field(1.5, gt=0, description="soft-match temperature")
    holistic_weight: float = Field(1.0, ge=0, description="α")
    code_weight: float = Field(0.5, ge=0, description="β")
    modalities: list[str] | None = Field(None, description="modalities distilled (default: all)")
    code_input: Literal["signed", "abs"] = "signed"
    holistic: Literal["mean", "frobenius"] = Field(
        "mean",
        description="per-pair mean (the paper's text) or the official code's per-sequence Frobenius norm",
    )
    id_only: bool = Field(
        False,
        description="supervise the backbone's ID table (the only choice on a backbone without modality tables)",
    )
    async_warmup: bool = True
    warmup_gamma: float = Field(4.0, ge=1.0)
    warmup_epochs: int = Field(10, ge=0)
    legacy_constant_ratio: bool = False
    legacy_weight_wiring: bool = False
    legacy_frobenius: bool = Field(False, description="the earlier name of holistic: frobenius")

    @model_validator(mode="after")
    def _frobenius_alias(self) -> CDLOptions:
        if self.legacy_frobenius:
            self.holistic = "frobenius"
        return self


@register_distiller
class CDL(Distiller):
    """Holistic and dissected correlation distillation on co-occurring pairs (module docstring); holds the
    forgetting diagnostic (`probe`) it logs each epoch."""

    name = "cdl"
    tasks = frozenset({"next-item"})
    Options = CDLOptions
    needs = (CORRELATION_TABLES,)
    search_space = {
        "holistic_weight": [0.0, 0.1, 0.5, 1.0, 5.0, 10.0],
        "code_weight": [0.0, 0.1, 0.5, 1.0, 5.0, 10.0],
    }
    off_point = {"holistic_weight": 0.0, "code_weight": 0.0, "async_warmup": False}
    controls = {"warmup_only": {"holistic_weight": 0.0, "code_weight": 0.0}}

    def __init__(self, options: CDLOptions) -> None:
        super().__init__()
        self.options = options

    @classmethod
    def backbone_needs(cls, options: CDLOptions) -> tuple[Capability, ...]:
        """Modality tables; with `id_only` the ID table stands in, so correlation tables suffice."""
        return (CORRELATION_TABLES,) if options.id_only else (MODALITY_TABLES,)

    @property
    def distils(self) -> bool:
        """Whether any correlation term has a weight (α = β = 0: none, whatever the wiring)."""
        return self.options.holistic_weight > 0 or self.options.code_weight > 0

    def prepare(
        self, dataset: Dataset, backbone_factory: Callable[[], Recommender] | None, **context: Any
    ) -> None:
        # Drawn from its own seed: the backbone's random stream (dropout, batch order) then stays that of
        # the plain run with the same seed, so that with/without-CDL runs are paired as closely as possible.
        with torch.random.fork_rng():
            torch.manual_seed(self.options.seed)
            self._prepare(dataset, backbone_factory)

    def _prepare(self, dataset: Dataset, backbone_factory: Callable[[], Recommender] | None) -> None:
        opt = self.options
        if backbone_factory is None:
            raise ConfigError("cdl needs the backbone to size its student heads")
        self.probe = ForgettingDiagnostic(dataset, opt, opt.similarity, owner=self.name)
        if dataset.sequences is None:
            raise ConfigError(f"cdl: dataset {dataset.name!r} has no ordered histories")
        mods = list(dataset.features) if opt.modalities is None else list(opt.modalities)
        unknown = set(mods) - set(dataset.features)
        if unknown or not mods:
            raise ConfigError(
                f"cdl modalities {sorted(unknown) or mods} not among {sorted(dataset.features)}"
            )
        if opt.legacy_weight_wiring and len(mods) != 2:
            raise ConfigError(
                "legacy_weight_wiring reproduces a two-modality wiring; give exactly two modalities"
            )
        self.cdl_modalities = mods
        self.weights = self._weights()
        self.last_sizes: dict[str, tuple[int, ...]] = {}
        self._summary: dict[str, dict[str, float]] = {}
        if not self.distils:  # no term to supervise: no pairs, codes, codebooks or heads
            self._pairs_sampled = 0
            return
        backbone = backbone_factory()  # the heads' width
        assert isinstance(backbone, HasCorrelationTables)  # checked before the run (`CORRELATION_TABLES`)
        d = backbone.correlation_dim
        del backbone
        self._fit_teacher(dataset, mods)
        self.score_head = nn.ModuleDict({m: nn.Linear(d, d) for m in mods})
        self.code_head = nn.ModuleDict(
            {m: nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, opt.codes)) for m in mods}
        )

    def _fit_teacher(self, dataset: Dataset, mods: list[str]) -> None:
        """Per modality the codes z and the codebook fitted on pairs sampled from the training sequences
        (buffers `_z_<m>`, `_codebook_<m>`), the parts' bounds and the teacher's summary statistics."""
        opt = self.options
        rng = np.random.default_rng(opt.seed)
        assert dataset.sequences is not None  # `_prepare` refused a dataset without them
        a_np, c_np = sample_training_pairs(dataset.sequences, opt.sample_pairs, rng)
        a, c = torch.from_numpy(a_np), torch.from_numpy(c_np)
        self._pairs_sampled = len(a)
        g = torch.Generator().manual_seed(opt.seed)
        fit = QUANTIZERS[opt.quantizer]
        self.bounds: dict[str, list[tuple[int, int]]] = {}
        for m in mods:
            z = compress_features(dataset.features[m], opt.compress_dim)
            self.bounds[m] = part_bounds(z.shape[1], opt.parts)
            vecs = dissected_vectors(z[a], z[c], self.bounds[m], opt.similarity)
            book = fit(vecs, opt.codes, g)
            self.register_buffer(f"_z_{m}", z, persistent=False)
            self.register_buffer(f"_codebook_{m}", book, persistent=False)
            usage = torch.bincount(assign_codes(vecs, book), minlength=opt.codes).float() / len(vecs)
            hol = pair_similarity(z[a], z[c], opt.similarity)
            self._summary[m] = {
                "code_width": int(z.shape[1]),
                "target_mean": round(float(hol.mean()), 4),
                "target_std": round(float(hol.std()), 4),
                "codes_used": int((usage > 0).sum()),
                "code_entropy_nats": round(float(-(usage[usage > 0] * usage[usage > 0].log()).sum()), 3),
            }

    def _weights(self) -> dict[tuple[str, str], float]:
        """(term, modality) -> weight; the legacy wiring swaps as the official loss does."""
        alpha, beta = self.options.holistic_weight, self.options.code_weight
        w = {(t, m): (alpha if t == "hol" else beta) for m in self.cdl_modalities for t in ("hol", "code")}
        if self.options.legacy_weight_wiring:
            first, second = self.cdl_modalities
            w[("code", first)] = alpha
            w[("hol", second)] = beta
        return w

    def teacher(
        self, m: str, a: Tensor, c: Tensor, holistic: bool = True, code: bool = True
    ) -> tuple[Tensor | None, Tensor | None]:
        """(holistic target C, code Q) of pairs (a[k], c[k]) for modality m; a part not asked for is None."""
        z = getattr(self, f"_z_{m}")
        za, zc = z[a], z[c]
        hol = pair_similarity(za, zc, self.options.similarity) if holistic else None
        if not code:
            return hol, None
        vec = dissected_vectors(za, zc, self.bounds[m], self.options.similarity)
        return hol, assign_codes(vec, getattr(self, f"_codebook_{m}"))

    # distinct item pairs whose teacher values are kept per modality (beyond it, computed per batch)
    TEACHER_CACHE_PAIRS = 4_000_000

    def _cached_teacher(
        self, m: str, a: Tensor, c: Tensor, holistic: bool, code: bool
    ) -> tuple[Tensor | None, Tensor | None]:
        """`teacher(m, a, c, holistic, code)`, from a cache of the pairs seen so far.

        The targets of a pair are a fixed function of the frozen codes, and a run's batches revisit the same
        few co-occurring pairs every epoch (on `scientific` ~23k distinct pairs against ~100k per epoch), so
        each distinct pair is computed once, when first met, and looked up after. The teacher is row-wise
        (each pair's similarities and nearest codeword depend on that pair alone), so the cached values are
        those of the per-batch computation, bit for bit. Not state: neither saved nor restored (a resumed run
        refills it), and it draws no random number. Past `TEACHER_CACHE_PAIRS` distinct pairs the new pairs
        of a batch are computed for it alone."""
        cache: dict = self.__dict__.setdefault("_teacher_cache", {})
        slot = (m, holistic, code)
        n = getattr(self, f"_z_{m}").shape[0]
        keys = a.long() * n + c.long()
        if slot not in cache or cache[slot][0].device != keys.device:
            cache[slot] = (keys.new_empty(0), None, None)
        known, hol, codes = cache[slot]
        pos = torch.searchsorted(known, keys).clamp_(max=max(len(known) - 1, 0))
        hit = known[pos] == keys if len(known) else torch.zeros_like(keys, dtype=torch.bool)
        if not bool(hit.all()):
            new = torch.unique(keys[~hit])
            if len(known) + len(new) > self.TEACHER_CACHE_PAIRS:
                return self.teacher(m, a, c, holistic, code)
            new_hol, new_codes = self.teacher(m, new // n, new % n, holistic, code)
            merged = torch.cat([known, new])
            order = torch.argsort(merged)
            known = merged[order]
            hol = None if new_hol is None else (new_hol if hol is None else torch.cat([hol, new_hol]))[order]
            codes = (
                None if new_codes is None else (new_codes if codes is None else torch.cat([codes, new_codes]))
            )
            codes = None if codes is None else codes[order]
            cache[slot] = (known, hol, codes)
            pos = torch.searchsorted(known, keys)
        return (None if hol is None else hol[pos]), (None if codes is None else codes[pos])

    def student_terms(
        self,
        m: str,
        e: Tensor,
        a: Tensor,
        c: Tensor,
        seq: Tensor,
        n_seq: int,
        holistic: bool = True,
        code: bool = True,
    ) -> tuple[Tensor | None, Tensor | None]:
        """Unweighted (L_hol, L_code) for modality m on the student's table e; a term not asked for is None."""
        opt = self.options
        with torch.no_grad():
            target, codes = self._cached_teacher(m, a, c, holistic, code)
        ea, ec = e[a], e[c]
        hol = code_loss = None
        if holistic:
            assert target is not None  # asked for
            head = self.score_head[m]
            pred = pair_similarity(head(ea), head(ec), opt.similarity)
            diff2 = (pred / opt.tau - target / opt.tau).pow(2)
            if (
                opt.holistic == "frobenius"
            ):  # both orders of each pair, per sequence, then the mean over sequences
                per_seq = torch.zeros(n_seq, device=e.device, dtype=diff2.dtype).index_add_(
                    0, seq, 2 * (diff2 + 1e-8)
                )
                hol = per_seq.sqrt().mean()
            else:
                hol = diff2.mean()
        if code:
            assert codes is not None  # asked for
            delta = ea - ec if opt.code_input == "signed" else (ea - ec).abs()
            code_loss = F.cross_entropy(self.code_head[m](delta), codes)
            self.last_sizes[m] = (len(a), *delta.shape[1:])
        return hol, code_loss

    def loss(
        self, student: Recommender, rep: Representation, batch: Batch | SeqBatch, epoch: int
    ) -> dict[str, Tensor]:
        if not self.distils:  # α = β = 0 (the off point and the warm-up-only control): no term, no work
            return {}
        # a next-item batch of a model with correlation tables: both checked before the run
        assert isinstance(batch, SeqBatch) and isinstance(student, HasCorrelationTables)
        seq, p, q = cooccurring_pairs(batch.items, batch.lengths)
        self.last_sizes = {
            "mask": (len(batch.items), batch.items.shape[1], batch.items.shape[1]),
            "pairs": (len(seq),),
        }
        if len(seq) == 0:
            return {}
        a, c = batch.items[seq, p], batch.items[seq, q]
        tables = self.supervised_tables(student, rep)
        out: dict[str, Tensor] = {}
        for m in self.cdl_modalities:
            w_hol, w_code = self.weights[("hol", m)], self.weights[("code", m)]
            hol, code = self.student_terms(m, tables[m], a, c, seq, len(batch.items), w_hol > 0, w_code > 0)
            if hol is not None:
                out[f"cdl_hol_{m}"] = w_hol * hol
            if code is not None:
                out[f"cdl_code_{m}"] = w_code * code
        return out

    def supervised_tables(self, student: HasCorrelationTables, rep: Representation) -> dict[str, Tensor]:
        """The backbone's modality tables, or with `id_only` its ID table for every modality."""
        if self.options.id_only:
            ids = student.id_table()
            return {m: ids for m in self.probe.modalities}
        return student.correlation_tables(rep)

    def head_view(self, m: str, ea: Tensor, ec: Tensor) -> Tensor | None:
        """P = sim(W e_a, W e_c), where the holistic term of modality m is on."""
        if not self.distils or self.weights.get(("hol", m), 0.0) <= 0 or m not in self.score_head:
            return None
        head = self.score_head[m]
        return pair_similarity(head(ea), head(ec), self.options.similarity)

    def on_epoch_end(self, student: Recommender, epoch: int) -> dict[str, float]:
        """The forgetting diagnostic of CDL's supervised tables, with its score head's view."""
        return self.probe.measure(student, self.supervised_tables, self.head_view)

    def lr_multipliers(self, epoch: int) -> dict[str, float]:
        """The asynchronous warm-up of the backbone's modality group (applied by the trainer)."""
        if not self.options.async_warmup:
            return {}
        opt = self.options
        schedule = AsyncWarmup(
            gamma=opt.warmup_gamma, epochs=opt.warmup_epochs, legacy_constant_ratio=opt.legacy_constant_ratio
        )
        return warmup_factors(schedule, (MODALITY_GROUP,), epoch)

    def summary(self) -> dict:
        """Teacher statistics recorded in the run's metrics.json (`distill_info`)."""
        return {
            "pairs_sampled": self._pairs_sampled,
            "quantizer": self.options.quantizer,
            "modalities": self._summary,
        }

    def codes_for(self, m: str, a: Tensor, c: Tensor) -> Tensor:
        """Teacher codes of item pairs (a[k], c[k]) for modality m (for inspection and tests)."""
        codes = self.teacher(m, a, c, holistic=False)[1]
        assert codes is not None  # asked for
        return codes
