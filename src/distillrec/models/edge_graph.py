"""Edge-valued products on a fixed directed graph, for attention over the user-item edges (GRCN, EgoGCN).

Attention needs one value per edge (a score, a softmax weight), which a fixed normalised matrix cannot
hold. `EdgeGraph` keeps the edge list sorted by target and runs per-edge dot products and weighted sums
as CSR products in both directions, so neither pass scatters per-edge [E, d] tensors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from distillrec.models.graph import csr


def bipartite_edges(train: sp.csr_matrix) -> tuple[Tensor, Tensor]:
    """Directed edges of the user-item graph in both directions, users first then items (ids offset).

    Returns (src, dst) of length 2·nnz: the first nnz edges go user -> item, the next nnz item -> user,
    so that edge e and edge e + nnz are the two directions of one interaction.
    """
    n_users = train.shape[0]
    coo = train.tocoo()
    u = torch.from_numpy(coo.row.astype(np.int64))
    i = torch.from_numpy(coo.col.astype(np.int64)) + n_users
    return torch.cat([u, i]), torch.cat([i, u])


def edge_softmax(scores: Tensor, index: Tensor, n_nodes: int) -> Tensor:
    """Softmax of edge scores over the edges that share a node (`index`, e.g. each edge's target)."""
    with torch.no_grad():
        top = torch.full((n_nodes,), -torch.inf, dtype=scores.dtype, device=scores.device)
        top = top.scatter_reduce(0, index, scores, reduce="amax", include_self=True)
    e = (scores - top[index]).exp()
    denom = torch.zeros(n_nodes, dtype=scores.dtype, device=scores.device).index_add(0, index, e)
    return e / denom[index]


class EdgeGraph(torch.nn.Module):
    """A fixed directed graph as an edge list sorted by target, for attention-style edge-valued products.

    `dot(a, b)` (a[src]·b[dst] per edge), `softmax(scores)` (over each target's incoming edges) and
    `aggregate(x, w)` (Σ_{e→v} w_e x[src_e]) run as CSR products in both directions, so neither the
    forward nor the backward pass scatters per-edge [E, d] tensors. Buffers are not saved in checkpoints.
    """

    src: Tensor
    dst: Tensor
    crow: Tensor
    by_src: Tensor
    crow_t: Tensor
    col_t: Tensor

    def __init__(self, src: Tensor, dst: Tensor, n_nodes: int) -> None:
        super().__init__()
        self.n_nodes = n_nodes
        order = torch.argsort(dst * n_nodes + src)
        src, dst = src[order], dst[order]
        by_src = torch.argsort(src * n_nodes + dst)
        self.register_buffer("src", src, persistent=False)
        self.register_buffer("dst", dst, persistent=False)
        self.register_buffer("crow", _crow(dst, n_nodes), persistent=False)
        self.register_buffer("by_src", by_src, persistent=False)
        self.register_buffer("crow_t", _crow(src[by_src], n_nodes), persistent=False)
        self.register_buffer("col_t", dst[by_src], persistent=False)

    def matrix(self, values: Tensor) -> Tensor:
        """CSR [target, source] with one value per edge."""
        return csr(self.crow, self.src, values, (self.n_nodes, self.n_nodes))

    def matrix_t(self, values: Tensor) -> Tensor:
        """CSR [source, target] with one value per edge (values in edge order)."""
        return csr(self.crow_t, self.col_t, values[self.by_src], (self.n_nodes, self.n_nodes))

    def dot(self, a: Tensor, b: Tensor) -> Tensor:
        return _EdgeDot.apply(a, b, self)

    def softmax(self, scores: Tensor) -> Tensor:
        return edge_softmax(scores, self.dst, self.n_nodes)

    def aggregate(self, x: Tensor, weight: Tensor) -> Tensor:
        return _EdgeSpMM.apply(weight, x, self)


def _crow(rows: Tensor, n: int) -> Tensor:
    crow = torch.zeros(n + 1, dtype=torch.long, device=rows.device)
    crow[1:] = torch.bincount(rows, minlength=n).cumsum(0)
    return crow


def _rowdot(a: Tensor, ia: Tensor, b: Tensor, ib: Tensor) -> Tensor:
    """a[ia_e]·b[ib_e] per edge (index_select and a fused dot: several times faster than a[ia] * b[ib])."""
    return torch.linalg.vecdot(a.index_select(0, ia), b.index_select(0, ib))


class _EdgeDot(torch.autograd.Function):
    """s_e = a[src_e]·b[dst_e]; grads: ∂a = Gᵀ b, ∂b = G a with G[dst, src] = grad_e."""

    @staticmethod
    def forward(ctx: Any, a: Tensor, b: Tensor, graph: EdgeGraph) -> Tensor:
        ctx.save_for_backward(a, b)
        ctx.graph = graph
        return _rowdot(a, graph.src, b, graph.dst)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        a, b = ctx.saved_tensors
        g = ctx.graph
        grad = grad.contiguous()
        grad_a = g.matrix_t(grad) @ b if ctx.needs_input_grad[0] else None
        grad_b = g.matrix(grad) @ a if ctx.needs_input_grad[1] else None
        return grad_a, grad_b, None


class _EdgeSpMM(torch.autograd.Function):
    """out[v] = Σ_{e: dst_e = v} w_e x[src_e]; grads: ∂x = Wᵀ grad, ∂w_e = grad[dst_e]·x[src_e]."""

    @staticmethod
    def forward(ctx: Any, weight: Tensor, x: Tensor, graph: EdgeGraph) -> Tensor:
        ctx.save_for_backward(weight, x)
        ctx.graph = graph
        return graph.matrix(weight) @ x

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        weight, x = ctx.saved_tensors
        g = ctx.graph
        grad = grad.contiguous()
        grad_w = _rowdot(grad, g.dst, x, g.src) if ctx.needs_input_grad[0] else None
        grad_x = g.matrix_t(weight) @ grad if ctx.needs_input_grad[1] else None
        return grad_w, grad_x, None
