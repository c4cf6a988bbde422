"""Sparse item-item kNN graphs from modality features (ItemKNN-CBF, MGCN, LATTICE, FREEDOM).

Similarities are computed in row chunks and only the top-k per row is kept, so no items x items dense
matrix is ever built.

A graph whose build costs more than a few seconds (items² × width ≥ CACHE_MIN_WORK) is kept on disk under
DISTILLREC_CACHE (default ~/.cache/distillrec; "off": never), keyed by a SHA-256 of the features' bytes, the
shape, k, the edge weighting and the chunk size: the runs of an experiment, a CKD student and its teachers
share one build per modality instead of one each. A cached graph is the same matrix (stored exactly); an
unreadable entry is built again and replaced.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor

from distillrec.atomic import atomic_write_bytes
from distillrec.models.graph import SparseGraph


def knn_graph(features: Tensor, k: int, chunk: int = 2048, normalise: str = "sym") -> sp.csr_matrix:
    """Sparse item-item kNN graph from cosine similarity, built in row chunks (never items x items dense).

    Each row keeps its top-k neighbours (self excluded where possible); the graph is then normalised:
    "sym" = D^-1/2 A D^-1/2 (MMRec/LATTICE/FREEDOM), "row" = D^-1 A, "none" = raw top-k similarities.
    """
    n = features.shape[0]
    k = max(1, min(k, n - 1)) if n > 1 else 1
    x = F.normalize(features.float(), dim=1)
    rows, cols, vals = [], [], []
    for start in range(0, n, chunk):
        sim = x[start : start + chunk] @ x.T
        ar = torch.arange(sim.shape[0])
        if n > 1:
            sim[ar, ar + start] = -torch.inf
        top, idx = torch.topk(sim, k, dim=1)
        rows.append((ar + start).repeat_interleave(k))
        cols.append(idx.reshape(-1))
        vals.append(top.reshape(-1))
    r = torch.cat(rows).numpy()
    c = torch.cat(cols).numpy()
    v = torch.cat(vals).numpy().astype(np.float32)
    if normalise == "none":
        return sp.csr_matrix((v, (r, c)), shape=(n, n))
    a = sp.csr_matrix((np.ones_like(v), (r, c)), shape=(n, n))
    deg = np.asarray(a.sum(1)).ravel()
    if normalise == "row":
        return (sp.diags(1.0 / np.maximum(deg, 1e-12)) @ a).tocsr().astype(np.float32)
    inv = np.power(np.maximum(deg, 1e-12), -0.5)
    return (sp.diags(inv) @ a @ sp.diags(inv)).tocsr().astype(np.float32)


def is_constant(features: Tensor) -> bool:
    """True when every row equals the first, as after `mean_ablate`: all item similarities then tie."""
    return features.shape[0] <= 1 or bool(torch.equal(features, features[:1].expand_as(features)))


log = logging.getLogger("distillrec.knn")
CACHE_VAR = "DISTILLREC_CACHE"
CACHE_MIN_WORK = 5e10  # items² × width below which building is quicker than hashing, reading and writing
CACHE_VERSION = 1  # bump when the graph a given input yields changes


def cache_root() -> Path | None:
    """The cache folder (DISTILLREC_CACHE, else ~/.cache/distillrec), or None when it is "off"."""
    raw = os.environ.get(CACHE_VAR, "").strip()
    if raw.lower() == "off":
        return None
    return Path(raw).expanduser() if raw else Path.home() / ".cache" / "distillrec"


def _cache_file(x: Tensor, k: int, weighted: bool, chunk: int) -> Path | None:
    root = cache_root()
    if root is None or x.shape[0] ** 2 * x.shape[1] < CACHE_MIN_WORK:
        return None
    h = hashlib.sha256(f"knn|v{CACHE_VERSION}|{tuple(x.shape)}|{x.dtype}|{k}|{weighted}|{chunk}|".encode())
    h.update(x.contiguous().numpy().data)
    return root / "knn" / f"{h.hexdigest()[:40]}.npz"


def _read_cached(path: Path, n: int) -> sp.csr_matrix | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            graph = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=(n, n))
        graph.check_format(full_check=True)
        return graph
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError) as exc:
        log.warning("kNN cache %s unreadable (%s): building the graph again", path, exc)
        return None


def _write_cached(path: Path, graph: sp.csr_matrix) -> None:
    """Atomically: a reader sees the whole entry or none (a lost entry is only a rebuild, so not synced)."""
    buf = io.BytesIO()
    np.savez(buf, data=graph.data, indices=graph.indices, indptr=graph.indptr)
    try:
        atomic_write_bytes(path, buf.getvalue(), durable=False)
    except OSError as exc:  # a read-only or full disk costs the next run a build, nothing else
        log.warning("kNN cache %s not written (%s)", path, exc)


def knn_adjacency(features: Tensor, k: int, weighted: bool, chunk: int = 2048) -> sp.csr_matrix:
    """`_knn_adjacency`, read from the on-disk cache when an expensive build was made before (module doc)."""
    x = features.detach().float().cpu()
    path = _cache_file(x, k, weighted, chunk)
    graph = _read_cached(path, x.shape[0]) if path is not None else None
    if graph is None:
        graph = _knn_adjacency(x, k, weighted, chunk)
        if path is not None:
            _write_cached(path, graph)
    return graph


def _knn_adjacency(features: Tensor, k: int, weighted: bool, chunk: int = 2048) -> sp.csr_matrix:
    """Normalised top-k cosine graph in which each item counts itself as one of its k neighbours.

    This is the graph of MMRec's MGCN, LATTICE and FREEDOM, whose dense top-k over cosine similarity
    ranks the self-similarity 1 first: `knn_graph` finds the k-1 other neighbours (in chunks, sparse) and
    the diagonal is added. Edges carry the similarity (`weighted`, clipped at 0 so that degrees stay
    positive) or 1; the result is D^-1/2 A D^-1/2 with D the row sums (A is directed, so the matrix is
    not symmetric).
    """
    n = features.shape[0]
    a = sp.identity(n, dtype=np.float32, format="csr")
    if k > 1 and n > 1:
        sims = knn_graph(features.detach().float().cpu(), k - 1, chunk=chunk, normalise="none")
        sims.data = np.maximum(sims.data, 0.0) if weighted else np.ones_like(sims.data)
        a = (a + sims).tocsr()
    deg = np.asarray(a.sum(1)).ravel()
    inv = np.zeros_like(deg)
    inv[deg > 0] = deg[deg > 0] ** -0.5
    return (sp.diags(inv) @ a @ sp.diags(inv)).tocsr().astype(np.float32)


class ItemKnnGraph:
    """Propagation over one modality's item-item kNN graph (`knn_adjacency`), on the features' device.

    A constant modality (mean-ablated: every similarity ties) gets the graph that ties imply, every item
    an equal neighbour of every other: (1/n) 1 1^T, i.e. x -> the mean row of x. So an ablated modality
    adds the same vector to every item, the graph analogue of a mean feature row; an arbitrary top-k of
    ties would instead make a few hub items.
    """

    def __init__(self, features: Tensor, k: int, weighted: bool) -> None:
        self.uniform = is_constant(features)
        self.graph = None
        if not self.uniform:
            self.graph = SparseGraph(knn_adjacency(features, k, weighted), symmetric=False).to(
                features.device
            )

    def __call__(self, x: Tensor) -> Tensor:
        if self.graph is None:
            return x.mean(0, keepdim=True).expand_as(x)
        return self.graph(x)
