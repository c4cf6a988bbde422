"""Codebooks for KDSR's dissected correlations: k-means++ seeding, Lloyd's k-means, online vector
quantisation (EMA codeword updates), and nearest-codeword assignment. Pure tensor functions; every
random draw comes from the `generator` passed in."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def assign_codes(vectors: Tensor, codebook: Tensor, chunk: int = 65536) -> Tensor:
    """Index of the nearest codeword (squared Euclidean; ties → lowest index) for each row."""
    out = []
    for s in range(0, len(vectors), chunk):
        out.append(torch.cdist(vectors[s : s + chunk], codebook).argmin(1))
    return torch.cat(out) if out else torch.empty(0, dtype=torch.long, device=vectors.device)


def seed_codebook(vectors: Tensor, k: int, generator: torch.Generator, sample: int = 20000) -> Tensor:
    """k-means++ seeding (each next codeword drawn with probability ∝ squared distance to the nearest
    chosen one), on at most `sample` vectors."""
    if len(vectors) > sample:
        vectors = vectors[torch.randperm(len(vectors), generator=generator)[:sample]]
    n = len(vectors)
    idx = int(torch.randint(n, (1,), generator=generator))
    centers = [vectors[idx]]
    dist = (vectors - vectors[idx]).pow(2).sum(1)
    for _ in range(1, k):
        total = float(dist.sum())
        idx = (
            int(torch.randint(n, (1,), generator=generator))
            if total <= 0
            else int(torch.multinomial(dist / total, 1, generator=generator))
        )
        centers.append(vectors[idx])
        dist = torch.minimum(dist, (vectors - vectors[idx]).pow(2).sum(1))
    return torch.stack(centers).clone()


def kmeans_codebook(vectors: Tensor, k: int, generator: torch.Generator, iters: int = 50) -> Tensor:
    """Lloyd's k-means from k-means++ seeds; an emptied cluster is re-seeded from the farthest point."""
    codebook = seed_codebook(vectors, k, generator)
    for _ in range(iters):
        d = torch.cdist(vectors, codebook)
        assign = d.argmin(1)
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(codebook).index_add_(0, assign, vectors)
        new = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], codebook)
        empty = (counts == 0).nonzero(as_tuple=True)[0]
        if len(empty):
            far = d.gather(1, assign[:, None]).squeeze(1).topk(len(empty)).indices
            new[empty] = vectors[far]
        if torch.allclose(new, codebook):
            break
        codebook = new
    return codebook


def vq_codebook(
    vectors: Tensor,
    k: int,
    generator: torch.Generator,
    epochs: int = 12,
    batch: int = 4096,
    decay: float = 0.9,
) -> Tensor:
    """Online vector quantisation from k-means++ seeds: each step assigns a random mini-batch to the nearest codewords and
    moves each codeword to an exponential moving average of its assigned vectors (VQ-VAE's codebook
    update). A codeword whose average usage falls under a tenth of its share is dead: it is re-seeded
    with the worst-quantised vectors of the batch. About `epochs` passes over the vectors, at least 50
    and at most 300 steps."""
    n = len(vectors)
    steps = min(300, max(50, epochs * -(-n // batch)))
    codebook = seed_codebook(vectors, k, generator)
    share = min(batch, n) / k
    ema_count = torch.full((k,), share)
    ema_sum = codebook * share
    for _ in range(steps):
        v = vectors[torch.randint(n, (min(batch, n),), generator=generator)]
        d = torch.cdist(v, codebook)
        assign = d.argmin(1)
        counts = torch.bincount(assign, minlength=k).float()
        sums = torch.zeros_like(codebook).index_add_(0, assign, v)
        ema_count = decay * ema_count + (1 - decay) * counts
        ema_sum = decay * ema_sum + (1 - decay) * sums
        codebook = ema_sum / ema_count.clamp_min(1e-6)[:, None]
        dead = (ema_count < 0.1 * share).nonzero(as_tuple=True)[0]
        if len(dead):
            worst = d.gather(1, assign[:, None]).squeeze(1).topk(min(len(dead), len(v))).indices
            dead = dead[: len(worst)]
            codebook[dead] = v[worst]
            ema_sum[dead], ema_count[dead] = v[worst] * share, share
    return codebook


# (vectors, k, generator) -> [k, d] codebook
QUANTIZERS: dict[str, Callable[[Tensor, int, torch.Generator], Tensor]] = {
    "vq": vq_codebook,
    "kmeans": kmeans_codebook,
}
