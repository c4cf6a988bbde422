"""The fixed user-item graphs of the GCN backbones and fast products with them.

Normalised adjacencies are built once in scipy, held as torch CSR (`SparseGraph`) and multiplied through
custom autograd functions whose backward is again one sparse product (the matrix itself when symmetric,
its stored transpose otherwise), far cheaper than torch's generic sparse autograd. `propagate` is
LightGCN's layer-mean propagation, shared by every backbone that propagates ID embeddings.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
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


def mean_adjacency(train: sp.csr_matrix) -> sp.csr_matrix:
    """D^-1 A of the bipartite user-item graph (users first): each node averages its neighbours."""
    r = train.tocsr().astype(np.float32)
    adj = sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float32)
    deg = np.asarray(adj.sum(1)).ravel()
    inv = np.zeros_like(deg)
    nz = deg > 0
    inv[nz] = 1.0 / deg[nz]
    return (sp.diags(inv) @ adj).tocsr().astype(np.float32)


def csr(crow: Tensor, col: Tensor, values: Tensor, size: tuple[int, int]) -> Tensor:
    """torch.sparse_csr_tensor without the warning torch gives on every construction (CSR support "in
    beta"): it says nothing a user can act on, and CSR is what makes the products fast."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, col, values, size)


def to_torch_csr(mat: sp.csr_matrix, device: torch.device | str = "cpu") -> Tensor:
    mat = mat.tocsr()
    mat.sort_indices()
    return csr(
        torch.from_numpy(mat.indptr.astype(np.int64)),
        torch.from_numpy(mat.indices.astype(np.int64)),
        torch.from_numpy(mat.data.astype(np.float32)),
        mat.shape,
    ).to(device)


class _SymmetricSpMM(torch.autograd.Function):
    """y = A x for a symmetric sparse A: the backward is again A g (no transpose, no generic COO autograd)."""

    @staticmethod
    def forward(ctx: Any, adj: Tensor, x: Tensor) -> Tensor:
        ctx.adj = adj
        return adj @ x

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, Tensor]:
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

    def _apply(self, fn: Callable[[Tensor], Tensor], recurse: bool = True) -> SparseGraph:
        # the sparse tensors are plain attributes (no sparse buffers): moved here with `.to(device)`
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
    def forward(ctx: Any, mat: Tensor, mat_t: Tensor, x: Tensor) -> Tensor:
        ctx.mat_t = mat_t
        return mat @ x

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[None, None, Tensor]:
        return None, None, ctx.mat_t @ grad


def propagate(graph: Callable[[Tensor], Tensor], ego: Tensor, n_layers: int) -> Tensor:
    """Mean of the layer outputs of LightGCN propagation (layer 0 = the input).

    `graph` is a `SparseGraph` or any x -> Â x (FREEDOM passes its pruned training adjacency).
    """
    out = ego
    total = ego
    for _ in range(n_layers):
        out = graph(out)
        total = total + out
    return total / (n_layers + 1)
