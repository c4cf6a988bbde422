"""Shared building blocks: normalised graphs, fast sparse propagation, sparse item-item kNN graphs."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor


def sym_norm_adjacency(train: sp.csr_matrix) -> sp.csr_matrix:
    """D^-1/2 A D^-1/2 of the bipartite user-item graph, users first then items (LightGCN's Â)."""
    n_users, n_items = train.shape
    r = train.tocsr().astype(np.float32)
    adj = sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float32)
    deg = np.asarray(adj.sum(1)).ravel()
    inv = np.zeros_like(deg)
    nz = deg > 0
    inv[nz] = deg[nz] ** -0.5
    d = sp.diags(inv)
    return (d @ adj @ d).tocsr().astype(np.float32)


def to_torch_csr(mat: sp.csr_matrix, device: torch.device | str = "cpu") -> Tensor:
    mat = mat.tocsr()
    mat.sort_indices()
    return torch.sparse_csr_tensor(
        torch.from_numpy(mat.indptr.astype(np.int64)),
        torch.from_numpy(mat.indices.astype(np.int64)),
        torch.from_numpy(mat.data.astype(np.float32)),
        size=mat.shape,
    ).to(device)


def to_torch_coo(mat: sp.spmatrix, device: torch.device | str = "cpu") -> Tensor:
    coo = mat.tocoo()
    idx = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
    return (
        torch.sparse_coo_tensor(idx, torch.from_numpy(coo.data.astype(np.float32)), coo.shape)
        .coalesce()
        .to(device)
    )


class _SymmetricSpMM(torch.autograd.Function):
    """y = A x for a symmetric sparse A: the backward is again A g (no transpose, no generic COO autograd)."""

    @staticmethod
    def forward(ctx, adj: Tensor, x: Tensor) -> Tensor:  # noqa: ANN001
        ctx.adj = adj
        return adj @ x

    @staticmethod
    def backward(ctx, grad: Tensor):  # noqa: ANN001, ANN205
        return None, ctx.adj @ grad


def symmetric_spmm(adj: Tensor, x: Tensor) -> Tensor:
    """Sparse (CSR) symmetric matrix times dense, with the cheap symmetric backward."""
    return _SymmetricSpMM.apply(adj, x)


class SparseGraph(torch.nn.Module):
    """A fixed normalised graph held as CSR (and its transpose where it is not symmetric)."""

    def __init__(self, mat: sp.csr_matrix, symmetric: bool) -> None:
        super().__init__()
        self.symmetric = symmetric
        self.shape = mat.shape
        self._mat = to_torch_csr(mat)
        self._mat_t = None if symmetric else to_torch_csr(mat.T.tocsr())

    def _apply(self, fn, recurse=True):  # noqa: ANN001, ANN202 - move the sparse tensors with .to(device)
        self._mat = fn(self._mat)
        if self._mat_t is not None:
            self._mat_t = fn(self._mat_t)
        return super()._apply(fn, recurse)

    def forward(self, x: Tensor) -> Tensor:
        if self.symmetric:
            return symmetric_spmm(self._mat, x)
        return _GeneralSpMM.apply(self._mat, self._mat_t, x)


class _GeneralSpMM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, mat: Tensor, mat_t: Tensor, x: Tensor) -> Tensor:  # noqa: ANN001
        ctx.mat_t = mat_t
        return mat @ x

    @staticmethod
    def backward(ctx, grad: Tensor):  # noqa: ANN001, ANN205
        return None, None, ctx.mat_t @ grad


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
        v, idx = torch.topk(sim, k, dim=1)
        rows.append((ar + start).repeat_interleave(k))
        cols.append(idx.reshape(-1))
        vals.append(v.reshape(-1))
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


def bpr_loss(pos: Tensor, neg: Tensor) -> Tensor:
    """-mean log sigmoid(pos - neg), computed stably."""
    return F.softplus(neg - pos).mean()


def l2_reg(*tensors: Tensor) -> Tensor:
    """Sum of squared L2 norms / 2 divided by the batch size (the usual BPR embedding regulariser)."""
    batch = tensors[0].shape[0]
    return sum(t.pow(2).sum() for t in tensors) / (2 * batch)
