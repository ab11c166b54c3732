"""Batched, seeded K-Means on patch features (the clustering of CCE, paper Eq. 9).

Pure tensor maths: imports only ``torch`` and the package's error types. One call clusters B
independent point sets at once, and runs all restarts of all of them as one batch of
``B * n_init`` Lloyd problems, so there is no Python loop over images, clusters or points.
"""

from __future__ import annotations

import torch
from torch import Tensor

from alignclip.errors import ConfigError, InputError

__all__ = ["KMEANS_INITS", "kmeans", "sq_distances"]

#: Initialisations: seeded ``random`` distinct points, or ``kmeans++`` (Arthur & Vassilvitskii, 2007).
KMEANS_INITS: tuple[str, ...] = ("random", "kmeans++")


def sq_distances(x: Tensor, centroids: Tensor) -> Tensor:
    """Squared Euclidean distances between points and centroids.

    Uses ``||x||^2 - 2 x c^T + ||c||^2`` with one batched matmul, so no [B, N, K, D] tensor is made.

    Args:
        x: Points [B, N, D] (float).
        centroids: Centroids [B, K, D] (same dtype as ``x``).

    Returns:
        Distances [B, N, K], clamped at 0 (the expansion can round slightly below 0).
    """
    x_sq = (x * x).sum(-1, keepdim=True)  # [B, N, 1]
    c_sq = (centroids * centroids).sum(-1).unsqueeze(1)  # [B, 1, K]
    cross = torch.bmm(x, centroids.transpose(1, 2))  # [B, N, K]
    return (x_sq - 2.0 * cross + c_sq).clamp_min_(0.0)


def _initial_indices(n_points: int, n_clusters: int, n_init: int, seed: int) -> Tensor:
    """Indices of the initial centroids of every restart, drawn on CPU.

    The same ``n_init`` index sets serve every batch element, so the result for one point set
    does not depend on the other elements of the batch, and CPU and CUDA draw the same numbers.

    Returns:
        Long tensor [n_init, n_clusters] of distinct point indices per row.
    """
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    order = torch.rand(n_init, n_points, generator=gen).argsort(dim=-1)
    return order[:, :n_clusters]


def _kmeanspp_centroids(points: Tensor, n_clusters: int, n_init: int, seed: int) -> Tensor:
    """k-means++ seeding of every run: the first centroid uniformly, each next one with probability proportional
    to the squared distance to the nearest centroid chosen so far.

    The uniform draws come from one seeded CPU generator ([n_init, K_c], the same for every batch element) and are
    turned into indices on the points' device by inverse-CDF search, so CPU and CUDA choose alike and nothing is
    read back to the host. The loop runs over the K_c clusters only.

    Args:
        points: ``[B * n_init, N, D]`` (restart r of element b is row ``b * n_init + r``).

    Returns:
        ``[B * n_init, K_c, D]`` initial centroids.
    """
    runs, n_points, dim = points.shape
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    u = torch.rand(n_init, n_clusters, generator=gen, dtype=torch.float64).to(points.device)
    u = u.repeat(runs // n_init, 1)  # [R, K]
    first = (u[:, 0] * n_points).long().clamp_max(n_points - 1)
    chosen = [points[torch.arange(runs, device=points.device), first]]  # each [R, D]
    nearest = sq_distances(points, chosen[0].unsqueeze(1)).squeeze(-1)  # [R, N]
    for k in range(1, n_clusters):
        cdf = nearest.double().cumsum(dim=1)
        target = u[:, k : k + 1] * cdf[:, -1:]
        idx = torch.searchsorted(cdf, target).squeeze(1).clamp_max(n_points - 1)  # [R]
        # all points coincide with the centroids: fall back to the uniform index
        idx = torch.where(cdf[:, -1] > 0, idx, (u[:, k] * n_points).long().clamp_max(n_points - 1))
        chosen.append(points[torch.arange(runs, device=points.device), idx])
        nearest = torch.minimum(nearest, sq_distances(points, chosen[-1].unsqueeze(1)).squeeze(-1))
    return torch.stack(chosen, dim=1)


def _canonical(labels: Tensor, centroids: Tensor) -> tuple[Tensor, Tensor]:
    """Relabel clusters in order of first appearance along N.

    Args:
        labels: Cluster ids [B, N] (long).
        centroids: Centroids [B, K, D].

    Returns:
        ``(labels, centroids)`` renumbered so that ``labels[b, 0] == 0`` and each new id first
        appears after all smaller ids; clusters that own no point come last, in their old order.
    """
    batch, n_points = labels.shape
    n_clusters, dim = centroids.shape[1:]
    positions = torch.arange(n_points, device=labels.device).expand(batch, n_points)
    first = torch.full((batch, n_clusters), n_points, dtype=torch.long, device=labels.device)
    first.scatter_reduce_(1, labels, positions, reduce="amin")
    order = first.argsort(dim=1, stable=True)  # order[b, new] = old
    rank = order.argsort(dim=1)  # rank[b, old] = new
    new_labels = rank.gather(1, labels)
    new_centroids = centroids.gather(1, order.unsqueeze(-1).expand(batch, n_clusters, dim))
    return new_labels, new_centroids


def kmeans(
    x: Tensor,
    n_clusters: int,
    n_iter: int = 30,
    n_init: int = 4,
    seed: int = 0,
    init: str = "random",
) -> tuple[Tensor, Tensor]:
    """Cluster each of B point sets into ``n_clusters`` groups with Lloyd's K-Means (Eq. 9).

    Every restart starts from ``n_clusters`` distinct points picked at random (one seeded CPU
    generator; the same index sets for every batch element), or with ``init="kmeans++"`` from
    k-means++ seeding (:func:`_kmeanspp_centroids`), and runs exactly ``n_iter`` Lloyd
    iterations: no data-dependent early exit, hence no host synchronisation on a GPU. A cluster
    that loses all its points keeps its previous centroid. Per batch element the restart with
    the lowest inertia (sum of squared distances to the assigned centroid) wins; ties go to the
    earlier restart. Computation is in float32 on ``x``'s device.

    Args:
        x: Points [B, N, D], e.g. VFM patch features ``patch_feats`` flattened to N = h * w.
        n_clusters: Number of clusters K_c, 1 <= K_c <= N.
        n_iter: Number of Lloyd iterations (assignment + update), >= 0.
        n_init: Number of random restarts, >= 1.
        seed: Seed of the CPU generator that draws the initial centroids.
        init: ``"random"`` or ``"kmeans++"`` (:data:`KMEANS_INITS`).

    Returns:
        ``(cluster_ids, centroids)``: cluster ids [B, N] (long, in [0, K_c)) and centroids
        [B, K_c, D] (``x``'s dtype when floating, else float32). Ids are canonical: renumbered in
        order of first appearance along N, so ``cluster_ids[:, 0] == 0``.

    Raises:
        InputError: ``x`` is not a 3-D tensor [B, N, D].
        ConfigError: ``n_clusters`` is outside [1, N], or ``n_iter``/``n_init`` is invalid.
    """
    if not isinstance(x, Tensor) or x.ndim != 3:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise InputError(
            f"kmeans expects points as a tensor [B, N, D], got {shape}; "
            "flatten the patch grid to [B, h*w, D] (add a batch axis with x[None] for one image)"
        )
    batch, n_points, dim = x.shape
    if n_clusters > n_points:
        raise ConfigError(f"K_c={n_clusters} exceeds the number of patches N={n_points}; choose n_clusters <= N")
    if n_clusters < 1:
        raise ConfigError(f"K_c={n_clusters} is below 1; choose 1 <= n_clusters <= N={n_points}")
    if n_init < 1:
        raise ConfigError(f"n_init={n_init} is below 1; choose n_init >= 1 restarts")
    if n_iter < 0:
        raise ConfigError(f"n_iter={n_iter} is negative; choose n_iter >= 0 Lloyd iterations")
    if init not in KMEANS_INITS:
        raise ConfigError(f"kmeans init={init!r} is not valid; choose one of {', '.join(KMEANS_INITS)}")

    out_dtype = x.dtype if x.is_floating_point() else torch.float32
    points = x.detach().to(torch.float32)
    runs = batch * n_init
    # [B * n_init, N, D]: restart r of element b is row b * n_init + r.
    points_rep = points.unsqueeze(1).expand(batch, n_init, n_points, dim).reshape(runs, n_points, dim)

    if init == "kmeans++":
        centroids = _kmeanspp_centroids(points_rep, n_clusters, n_init, seed)
    else:
        init_idx = _initial_indices(n_points, n_clusters, n_init, seed).to(x.device)  # [n_init, K]
        init_idx = init_idx.unsqueeze(0).expand(batch, n_init, n_clusters).reshape(runs, n_clusters)
        centroids = points_rep.gather(1, init_idx.unsqueeze(-1).expand(runs, n_clusters, dim))

    for _ in range(n_iter):
        labels = sq_distances(points_rep, centroids).argmin(dim=-1)  # [R, N]
        one_hot = torch.nn.functional.one_hot(labels, n_clusters).to(points_rep.dtype)  # [R, N, K]
        counts = one_hot.sum(dim=1)  # [R, K]
        sums = torch.bmm(one_hot.transpose(1, 2), points_rep)  # [R, K, D]
        means = sums / counts.clamp_min(1.0).unsqueeze(-1)
        centroids = torch.where((counts > 0).unsqueeze(-1), means, centroids)

    dists = sq_distances(points_rep, centroids)  # [R, N, K]
    min_d, labels = dists.min(dim=-1)
    inertia = min_d.sum(dim=-1).view(batch, n_init)
    best = inertia.argmin(dim=1)  # [B]
    rows = torch.arange(batch, device=x.device) * n_init + best
    labels, centroids = _canonical(labels[rows], centroids[rows])
    return labels, centroids.to(out_dtype)
