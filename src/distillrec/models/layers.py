"""Shared building blocks: normalised graphs, fast sparse propagation, sparse item-item kNN graphs."""

from __future__ import annotations

import warnings
import weakref
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor

T = TypeVar("T")


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
    with warnings.catch_warnings():  # torch flags CSR support as beta on every construction
        warnings.simplefilter("ignore", UserWarning)
        return _csr_tensor(mat, device)


def _csr_tensor(mat: sp.csr_matrix, device: torch.device | str) -> Tensor:
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
        return torch.sparse_csr_tensor(self.crow, self.src, values, (self.n_nodes, self.n_nodes))

    def matrix_t(self, values: Tensor) -> Tensor:
        """CSR [source, target] with one value per edge (values in edge order)."""
        return torch.sparse_csr_tensor(self.crow_t, self.col_t, values[self.by_src], (self.n_nodes, self.n_nodes))

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
    def forward(ctx, a: Tensor, b: Tensor, graph: EdgeGraph) -> Tensor:  # noqa: ANN001
        ctx.save_for_backward(a, b)
        ctx.graph = graph
        return _rowdot(a, graph.src, b, graph.dst)

    @staticmethod
    def backward(ctx, grad: Tensor):  # noqa: ANN001, ANN205
        a, b = ctx.saved_tensors
        g = ctx.graph
        grad = grad.contiguous()
        grad_a = g.matrix_t(grad) @ b if ctx.needs_input_grad[0] else None
        grad_b = g.matrix(grad) @ a if ctx.needs_input_grad[1] else None
        return grad_a, grad_b, None


class _EdgeSpMM(torch.autograd.Function):
    """out[v] = Σ_{e: dst_e = v} w_e x[src_e]; grads: ∂x = Wᵀ grad, ∂w_e = grad[dst_e]·x[src_e]."""

    @staticmethod
    def forward(ctx, weight: Tensor, x: Tensor, graph: EdgeGraph) -> Tensor:  # noqa: ANN001
        ctx.save_for_backward(weight, x)
        ctx.graph = graph
        return graph.matrix(weight) @ x

    @staticmethod
    def backward(ctx, grad: Tensor):  # noqa: ANN001, ANN205
        weight, x = ctx.saved_tensors
        g = ctx.graph
        grad = grad.contiguous()
        grad_w = _rowdot(grad, g.dst, x, g.src) if ctx.needs_input_grad[0] else None
        grad_x = g.matrix_t(weight) @ grad if ctx.needs_input_grad[1] else None
        return grad_w, grad_x, None


def mean_adjacency(train: sp.csr_matrix) -> sp.csr_matrix:
    """D^-1 A of the bipartite user-item graph (users first): each node averages its neighbours."""
    r = train.tocsr().astype(np.float32)
    adj = sp.bmat([[None, r], [r.T, None]], format="csr", dtype=np.float32)
    deg = np.asarray(adj.sum(1)).ravel()
    inv = np.zeros_like(deg)
    nz = deg > 0
    inv[nz] = 1.0 / deg[nz]
    return (sp.diags(inv) @ adj).tocsr().astype(np.float32)


def dot_bpr_loss(user: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
    """BPR on dot-product scores; `neg` is [B, d] or [B, n, d] (several negatives per positive)."""
    pos_score = (user * pos).sum(-1)
    if neg.dim() == 2:
        return bpr_loss(pos_score, (user * neg).sum(-1))
    return bpr_loss(pos_score.unsqueeze(1), (user.unsqueeze(1) * neg).sum(-1))


def mean_square_reg(user: Tensor, pos: Tensor, neg: Tensor) -> Tensor:
    """mean(u²) + (mean(pos²) + mean(neg²)) / 2: the mean over stacked (user, item) rows that the
    GRCN/MMGCN/EgoGCN codes use as their L2 term (one user row per positive and per negative)."""
    return user.pow(2).mean() + (pos.pow(2).mean() + neg.pow(2).mean()) / 2


# ----------------------------------------------------------------------------------------------------
# Item-item graphs from modality features (MGCN, LATTICE, FREEDOM)


def is_constant(features: Tensor) -> bool:
    """True when every row equals the first, as after `mean_ablate`: all item similarities then tie."""
    return features.shape[0] <= 1 or bool(torch.equal(features, features[:1].expand_as(features)))


def knn_adjacency(features: Tensor, k: int, weighted: bool, chunk: int = 2048) -> sp.csr_matrix:
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
            self.graph = SparseGraph(knn_adjacency(features, k, weighted), symmetric=False).to(features.device)

    def __call__(self, x: Tensor) -> Tensor:
        if self.graph is None:
            return x.mean(0, keepdim=True).expand_as(x)
        return self.graph(x)


class FeatureCache:
    """Values derived from a feature tensor (e.g. its kNN graph), rebuilt only for another tensor.

    Features are an argument of `represent`, so a graph built from them must follow the argument: it is
    cached per key against the identity and in-place version of the tensor it came from (a weak
    reference, so a freed tensor never matches a new one at the same address). The trainer passes the
    same tensors every step, so the graph is built once; a mean-ablated view is a new tensor and gets its
    own. Not part of the state dict: a loaded model rebuilds from the features it is given.
    """

    max_entries = 4

    def __init__(self) -> None:
        self._slots: dict[str, list[list]] = {}

    def get(self, key: str, tensor: Tensor, build: Callable[[Tensor], T], max_uses: int | None = None) -> T:
        """The value built from `tensor`; rebuilt for another tensor, or after `max_uses` returns of it.

        Each key keeps its `max_entries` most recently used tensors, so alternating between the training
        features and a counterfactual view (CKD does so every batch) does not rebuild the training graph.
        """
        slots = [s for s in self._slots.get(key, []) if s[0]() is not None]
        for slot in slots:
            if slot[0]() is tensor and slot[1] == tensor._version:
                slots.remove(slot)
                if max_uses is None or slot[3] < max_uses:
                    slot[3] += 1
                    self._slots[key] = [*slots, slot]
                    return slot[2]
                break
        value = build(tensor)
        self._slots[key] = [*slots, [weakref.ref(tensor), tensor._version, value, 1]][-self.max_entries :]
        return value

    def clear(self) -> None:
        self._slots.clear()

    def __getstate__(self) -> dict:  # weak references do not pickle; a copy starts empty
        return {"_slots": {}}
