"""The modality-forgetting diagnostic, and the `forgetting` distiller that logs it without any loss.

Every epoch, Pearson correlations over a fixed sample of random item pairs (a, c) go to the run's
history, per modality m:
  forget_corr_<m>  cos(e_a, e_c) of the supervised tables e vs cos(f_a, f_c) of the raw features
                   (the raw-feature view; e is the ID table on a backbone without modality tables)
  id_corr_<m>      cos of the ID table vs cos of the raw features (the ID-only reference)
  code_corr_<m>    sim(e_a, e_c) vs C_ac = sim(z_a, z_c), CDL's own target (the compressed codes)
  cdl_corr_<m>     (CDL, where its holistic term is on) P_ac = sim(W e_a, W e_c), the score head's
                   output the holistic term supervises, vs C_ac: what CDL supervises against its target
The raw features and their codes are not the same geometry (on `scientific` their pair cosines agree
at r ≈ 0.56 for image and 0.83 for text), so forget_corr and cdl_corr answer different questions.
The `forgetting` distiller logs the first three for a run without CDL (cosine, `compress_dim` codes);
CDL (`distill.cdl`) holds a `ForgettingDiagnostic` of its own, with its similarity, its supervised tables
and its score head.

The backbone side is `HasCorrelationTables` (`CORRELATION_TABLES`): per modality the item table a
correlation distiller supervises, and the ID table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from distillrec.data.dataset import Dataset
from distillrec.distill.base import Capability, Distiller
from distillrec.distill.pairs import Similarity, pair_similarity, pearson
from distillrec.distill.registry import register_distiller
from distillrec.errors import ConfigError
from distillrec.models.base import Recommender, Representation
from distillrec.models.sequential.base import compress_features


# --------------------------------------------------------------------------- what a backbone must have
@runtime_checkable
class HasCorrelationTables(Protocol):
    """Item tables a correlation distiller reads: per modality the [n_items, correlation_dim] embeddings it
    supervises (`correlation_tables(rep)`: the modality tables where the model has them, else its ID table),
    and the ID table (`id_table()`, the forgetting diagnostic's reference)."""

    correlation_dim: int

    def correlation_tables(self, rep: Representation) -> dict[str, Tensor]: ...

    def id_table(self) -> Tensor: ...


CORRELATION_TABLES = Capability(
    "correlation tables (correlation_tables, id_table, correlation_dim)", HasCorrelationTables
)

# (student, its representation) -> per modality the [n_items, d] table the diagnostic reads
TablesOf = Callable[[HasCorrelationTables, Representation], dict[str, Tensor]]
# (modality, e_a, e_c) -> P of the pairs through a supervised score head, or None where there is none
HeadView = Callable[[str, Tensor, Tensor], Tensor | None]


def own_correlation_tables(student: HasCorrelationTables, rep: Representation) -> dict[str, Tensor]:
    """The backbone's own `correlation_tables` (what the plain probe reads)."""
    return student.correlation_tables(rep)


# --------------------------------------------------------------------------- the diagnostic
class ProbeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    probe_pairs: int = Field(20000, ge=10, description="fixed random item pairs of the forgetting diagnostic")
    compress_dim: int = Field(128, ge=1, description="teacher code width (linear autoencoder)")
    seed: int = 0


class ForgettingDiagnostic(nn.Module):
    """Fixed random item pairs (a, c) with their raw-feature cosines and code similarities (non-persistent
    buffers), and `measure`, the columns of the module docstring for a student as it is now.

    `similarity` is that of the code view (CDL's target similarity; cosine for the plain probe); `owner`
    names the distiller in errors. Draws only from its own generator (seeded from `options.seed`)."""

    probe_a: Tensor
    probe_c: Tensor

    def __init__(
        self,
        dataset: Dataset,
        options: ProbeOptions,
        similarity: Similarity = "cosine",
        owner: str = "forgetting",
    ) -> None:
        super().__init__()
        if not dataset.features:
            raise ConfigError(f"{owner}: dataset {dataset.name!r} has no item features")
        self.similarity: Similarity = similarity
        g = torch.Generator().manual_seed(int(options.seed) + 7919)
        n, k = dataset.n_items, options.probe_pairs
        a = torch.randint(n, (k,), generator=g)
        c = (a + 1 + torch.randint(n - 1, (k,), generator=g)) % n  # c != a
        self.register_buffer("probe_a", a, persistent=False)
        self.register_buffer("probe_c", c, persistent=False)
        self.modalities = list(dataset.features)
        for m, f in dataset.features.items():
            z = compress_features(f, options.compress_dim)
            self.register_buffer(f"_feat_{m}", f.float(), persistent=False)
            self.register_buffer(
                f"_featsim_{m}", pair_similarity(f[a], f[c], "cosine").float(), persistent=False
            )
            self.register_buffer(
                f"_codesim_{m}", pair_similarity(z[a], z[c], similarity).float(), persistent=False
            )

    def features(self) -> dict[str, Tensor]:
        """The dataset's item features, by modality (what the student represents for the measurement)."""
        return {m: getattr(self, f"_feat_{m}") for m in self.modalities}

    @torch.no_grad()
    def measure(
        self,
        student: Recommender,
        tables_of: TablesOf = own_correlation_tables,
        head_view: HeadView | None = None,
    ) -> dict[str, float]:
        """The diagnostic's columns for `student`: its supervised tables are `tables_of(student, rep)`;
        `head_view`, where given and not None for a modality, adds that modality's `cdl_corr`."""
        assert isinstance(student, HasCorrelationTables)  # checked before the run (`CORRELATION_TABLES`)
        rep = student.represent(self.features())
        tables = tables_of(student, rep)
        ids = student.id_table()
        a, c = self.probe_a, self.probe_c
        out: dict[str, float] = {}
        for m in self.modalities:
            raw, target = getattr(self, f"_featsim_{m}"), getattr(self, f"_codesim_{m}")
            if m in tables:
                ea, ec = tables[m][a], tables[m][c]
                out[f"forget_corr_{m}"] = pearson(pair_similarity(ea, ec, "cosine"), raw)
                out[f"code_corr_{m}"] = pearson(pair_similarity(ea, ec, self.similarity), target)
                p = head_view(m, ea, ec) if head_view is not None else None
                if p is not None:
                    out[f"cdl_corr_{m}"] = pearson(p, target)
            out[f"id_corr_{m}"] = pearson(pair_similarity(ids[a], ids[c], "cosine"), raw)
        return out


# --------------------------------------------------------------------------- the distiller
@register_distiller
class ForgettingProbe(Distiller):
    """No loss: logs the modality-forgetting diagnostic each epoch (for runs without CDL)."""

    name = "forgetting"
    tasks = frozenset({"next-item"})
    Options = ProbeOptions
    needs = (CORRELATION_TABLES,)

    def __init__(self, options: ProbeOptions) -> None:
        super().__init__()
        self.options = options

    def prepare(
        self, dataset: Dataset, backbone_factory: Callable[[], Recommender] | None, **context: Any
    ) -> None:
        self.probe = ForgettingDiagnostic(dataset, self.options, "cosine", owner=self.name)

    def on_epoch_end(self, student: Recommender, epoch: int) -> dict[str, float]:
        return self.probe.measure(student)
