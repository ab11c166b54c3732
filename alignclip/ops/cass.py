"""CASS's tensor maths (Kim et al., CVPR 2025: spectral object-level context distillation and object-presence text).

Pure functions, batched over windows ``B`` and heads ``H``; ``N`` patches per window, ``d`` the head width.
Equation numbers are the CASS paper's (arXiv 2411.17150); where the authors' code (``clip/model.py``,
``cass_segmentor.py`` at commit 228ecdd) differs from the paper's text, the code is followed and said so.

Spectral distillation (the last CLIP block):

1. ``A = k kᵀ · s`` per head for CLIP and for the VFM (its keys min-max mapped onto CLIP's key range first):
   :func:`key_graph`, :func:`match_range`.
2. Each head's spectrum: its ``k_eigen`` largest eigenvalues, L2- then L1-normalised (:func:`head_spectra`);
   the cost of pairing VFM head i with CLIP head j is ``1 - W₁`` (:func:`spectral_cost`, Eq. 4-5: a Wasserstein
   distance of sorted spectra), assigned one-to-one by an exact minimum-cost matching (:func:`min_cost_assignment`,
   the Hungarian step of Eq. 5; the authors call scipy's ``linear_sum_assignment``; minimising ``1 - W₁`` pairs the
   heads whose spectra are most *different*, as their code does).
3. The VFM graph distilled to its top eigenpairs with dynamic eigenscaling (:func:`low_rank_graph`, Eq. 6-7), its
   diagonal zeroed and range mapped onto CLIP's graph, and mixed with CLIP's graph (:func:`distill_graphs`, Eq. 8).

Object-presence text adjustment (:func:`ward_clusters`, :func:`object_context_text`, Eq. 9-11).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "LOW_RANK_SOLVERS",
    "distill_graphs",
    "eigenscale",
    "head_spectra",
    "key_graph",
    "low_rank_graph",
    "match_range",
    "min_cost_assignment",
    "object_context_text",
    "spectral_cost",
    "ward_clusters",
]

#: How the VFM graph's top eigenpairs are found: ``"eigh"`` exactly (``torch.linalg.eigh``), or ``"randomized"``
#: (``torch.svd_lowrank``, the authors' call, whose random projection makes results vary with the RNG state).
LOW_RANK_SOLVERS = ("eigh", "randomized")


def key_graph(keys: torch.Tensor, scale: float) -> torch.Tensor:
    """Eq. 3: the attention graph ``A = k kᵀ · s`` of every head.

    Args:
        keys: ``[B, H, N, d]`` keys.
        scale: ``s`` (CLIP's ``d^-1/2``).

    Returns:
        ``[B, H, N, N]`` (the dtype of ``keys``).
    """
    return keys @ keys.transpose(-1, -2) * scale


def match_range(x: torch.Tensor, ref: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    """Min-max map ``x`` onto the value range of ``ref``, the extrema taken over ``dims`` (kept per other axis).

    ``(x - min x) / (max x - min x) · (max ref - min ref) + min ref``, in the dtype of ``x`` (as the authors' code: a
    half ``x`` stays half). CASS maps the VFM's keys onto CLIP's key range (all heads of a window) and the distilled
    graph onto the CLIP graph of its head.
    """
    x_min, x_max = x.amin(dim=dims, keepdim=True), x.amax(dim=dims, keepdim=True)
    r_min, r_max = ref.amin(dim=dims, keepdim=True), ref.amax(dim=dims, keepdim=True)
    return (x - x_min) / (x_max - x_min) * (r_max - r_min).to(x.dtype) + r_min.to(x.dtype)


def head_spectra(graphs: torch.Tensor | None, k_eigen: int, eigenvalues: torch.Tensor | None = None) -> torch.Tensor:
    """The ``k_eigen`` largest eigenvalues of every (symmetric) graph, descending, L2-normalised (Eq. 4).

    Args:
        graphs: ``[B, H, N, N]`` symmetric (ignored when ``eigenvalues`` is given).
        k_eigen: eigenvalues kept (the authors: 20).
        eigenvalues: ``[B, H, N]`` the graphs' eigenvalues in ascending order, when already computed
            (``torch.linalg.eigh``), so that no second decomposition runs.

    Returns:
        ``[B, H, k]`` float64 (``torch.linalg.eigvalsh`` in float64, as the authors').
    """
    vals = torch.linalg.eigvalsh(graphs.double()) if eigenvalues is None else eigenvalues.double()
    return F.normalize(vals.flip(-1)[..., :k_eigen], p=2, dim=-1)  # ascending → descending


def spectral_cost(vfm_spectra: torch.Tensor, clip_spectra: torch.Tensor) -> torch.Tensor:
    """Eq. 5's cost ``C[i, j] = 1 - W₁(λ̂ᵢ^VFM, λ̂ⱼ^CLIP)`` between VFM head i and CLIP head j.

    The spectra are L1-normalised, and ``W₁`` of two equally long sorted sets is ``Σ |sort(u) - sort(v)|`` (the
    authors' ``wasserstein_distance_pytorch``).

    Args:
        vfm_spectra, clip_spectra: ``[B, H, k]`` (from :func:`head_spectra`).

    Returns:
        ``[B, H, H]`` float32 (the authors' cost matrix is float32).
    """
    u = F.normalize(vfm_spectra, p=1, dim=-1).sort(dim=-1).values  # [B, H, k]
    v = F.normalize(clip_spectra, p=1, dim=-1).sort(dim=-1).values
    w1 = (u[:, :, None, :] - v[:, None, :, :]).abs().sum(-1)  # [B, H, H]
    return (1 - w1).float()


def _subset_tables(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bitmask tables of the assignment DP: ``prev [2^n, n]`` (mask without column j), ``has [2^n, n]`` (j in
    mask) and the masks by popcount ``levels`` (list of 1-D tensors) — host-side constants of ``n`` alone."""
    masks = torch.arange(1 << n)
    bits = 1 << torch.arange(n)
    has = (masks[:, None] & bits) != 0
    prev = masks[:, None] ^ bits
    popcount = has.sum(1)
    levels = [masks[popcount == r].to(device) for r in range(n + 1)]
    return prev.to(device), has.to(device), levels


def min_cost_assignment(cost: torch.Tensor) -> torch.Tensor:
    """Exact minimum-cost one-to-one assignment of rows to columns, batched: the permutation σ minimising
    ``Σᵢ C[i, σ(i)]`` (what scipy's ``linear_sum_assignment`` returns for a square matrix, on the device).

    Dynamic programming over column subsets: ``best[S]`` = the least cost of assigning rows ``0..|S|-1`` to the
    columns in S; ``best[S] = min_{j ∈ S} best[S \\ {j}] + C[|S| - 1, j]``, then the choices are traced back. It
    runs ``n`` steps of batched tensor operations over the ``2^n`` subsets (4096 for 12 heads) — no host read, no
    loop over windows. Sums in float64 (scipy's precision); ties between optima go to the smaller column index at
    the last row, which may differ from scipy's choice only for exactly tied optima.

    Args:
        cost: ``[B, n, n]``.

    Returns:
        ``[B, n]`` long: ``σ(i)`` for every row i.
    """
    b, n, _ = cost.shape
    c = cost.double()
    prev, has, levels = _subset_tables(n, cost.device)
    best = torch.full((b, 1 << n), float("inf"), dtype=torch.float64, device=cost.device)
    best[:, 0] = 0.0
    choice = torch.zeros((b, 1 << n), dtype=torch.long, device=cost.device)
    for r in range(1, n + 1):  # DP levels (rows), not heads of the model: each a batched step
        m = levels[r]  # [M] masks with r columns
        cand = best[:, prev[m]] + c[:, r - 1][:, None, :]  # [B, M, n]
        cand = cand.masked_fill(~has[m][None], float("inf"))
        val, arg = cand.min(dim=-1)
        best[:, m] = val
        choice[:, m] = arg
    sigma = torch.zeros((b, n), dtype=torch.long, device=cost.device)
    mask = torch.full((b,), (1 << n) - 1, dtype=torch.long, device=cost.device)
    bits = 1 << torch.arange(n, device=cost.device)
    for r in range(n - 1, -1, -1):  # trace back: row r took column choice[mask]
        j = choice.gather(1, mask[:, None])[:, 0]
        sigma[:, r] = j
        mask = mask ^ bits[j]
    return sigma


def eigenscale(vals: torch.Tensor) -> torch.Tensor:
    """Eq. 7, dynamic eigenscaling as the authors' ``_scale_singular_values``: the kept eigenvalues mapped
    linearly from ``[λ_min, λ_max]`` onto ``[0.5 λ_min, 1.5 λ_max]`` (large ones amplified, small ones damped).

    Args:
        vals: ``[..., r]`` eigenvalues (any order).
    """
    lo, hi = vals.amin(-1, keepdim=True), vals.amax(-1, keepdim=True)
    return (vals - lo) / (hi - lo) * (1.5 * hi - 0.5 * lo) + 0.5 * lo


def low_rank_graph(
    graphs: torch.Tensor,
    rank: int,
    scaling: bool = True,
    solver: str = "eigh",
    eig: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Eq. 6: the rank-``rank`` approximation ``U diag(λ') Uᵀ`` of every symmetric PSD graph, diagonal zeroed.

    The authors call ``torch.svd_lowrank(A, q=10)`` (their ``optimal_q`` loop always stops at its first ``q``: the
    energy ratio at the last kept value is 1 ≥ 0.95), so ``rank`` is 10 and all 10 pairs are used. For a symmetric
    PSD graph the singular pairs are eigenpairs, and ``U diag(λ') Uᵀ`` does not depend on the eigenvectors' signs.

    Args:
        graphs: ``[B, H, N, N]`` symmetric PSD.
        rank: eigenpairs kept.
        scaling: apply :func:`eigenscale` (the authors: on, except for VOC-20 and Cityscapes).
        solver: ``"eigh"`` (exact top eigenpairs) or ``"randomized"`` (``torch.svd_lowrank``, niter 2).
        eig: ``torch.linalg.eigh(graphs.double())`` when already computed (``"eigh"`` only).

    Returns:
        ``[B, H, N, N]`` float64.
    """
    if solver == "randomized":
        u, vals, v = torch.svd_lowrank(graphs.double(), q=rank)
    else:
        evals, evecs = torch.linalg.eigh(graphs.double()) if eig is None else eig  # ascending
        vals, u = evals.flip(-1)[..., :rank], evecs.flip(-1)[..., :rank]
        v = u
    if scaling:
        vals = eigenscale(vals)
    approx = (u * vals[..., None, :]) @ v.transpose(-1, -2)
    eye = torch.eye(approx.shape[-1], dtype=torch.bool, device=approx.device)
    return approx.masked_fill(eye, 0.0)


def distill_graphs(
    clip_graphs: torch.Tensor,
    vfm_graphs: torch.Tensor,
    cost: torch.Tensor,
    sigma: torch.Tensor,
    scale_factor: float = 10.0,
    rank: int = 10,
    scaling: bool = True,
    solver: str = "eigh",
    eig: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """Eq. 8 as the authors' ``_apply_spectral_strategy``: CLIP head i mixed with the distilled VFM head σ(i).

    ``Â_i = (w_i · γ · R(L(A^VFM_σ(i))) + A^CLIP_i) / (w_i · γ + 1)`` with ``L`` :func:`low_rank_graph`, ``R`` the
    min-max map onto ``A^CLIP_i``'s range (:func:`match_range`), γ = ``scale_factor`` and
    ``w_i = 1 - C[i, σ(i)]`` (note the code's indices: the weight is read at (VFM i, CLIP σ(i)) while the graphs
    paired are (VFM σ(i), CLIP i)).

    Args:
        clip_graphs: ``[B, H, N, N]`` CLIP's ``k kᵀ s``.
        vfm_graphs: ``[B, H, N, N]`` the VFM's.
        cost: ``[B, H, H]`` float32 from :func:`spectral_cost`.
        sigma: ``[B, H]`` from :func:`min_cost_assignment`.
        eig: the VFM graphs' ``torch.linalg.eigh`` in float64, when already computed (see :func:`low_rank_graph`).

    Returns:
        ``[B, H, N, N]`` in the dtype of ``clip_graphs`` (computed in float64).
    """
    distilled = low_rank_graph(vfm_graphs, rank, scaling, solver, eig)  # [B, H, N, N] float64
    n = distilled.shape[-1]
    paired = distilled.gather(1, sigma[:, :, None, None].expand(-1, -1, n, n))
    paired = match_range(paired, clip_graphs, dims=(-2, -1))
    w = 1 - cost.gather(2, sigma[:, :, None])[..., 0]  # [B, H] float32
    wg = (w * scale_factor)[..., None, None]
    mixed = (wg.double() * paired + clip_graphs.double()) / (wg + 1).double()
    return mixed.to(clip_graphs.dtype)


def _cosine_distances(text: torch.Tensor) -> torch.Tensor:
    """scikit-learn's ``cosine_distances``: ``1 - cos`` clipped to [0, 2], zero diagonal, in ``text``'s dtype."""
    t = F.normalize(text, dim=-1)
    d = (1 - t @ t.T).clamp(0, 2)
    return d.masked_fill(torch.eye(d.shape[0], dtype=torch.bool, device=d.device), 0.0)


def ward_clusters(text: torch.Tensor, threshold: float) -> torch.Tensor:
    """Eq. 9: flat clusters of the text embeddings, Ward linkage of their cosine distances cut at ``threshold``.

    As the authors' ``hierarchical_clustering`` (scipy ``linkage(method='ward')`` then ``fcluster(t, 'distance')``):
    agglomerative merges by the Lance-Williams Ward update, every merge at height ≤ ``threshold`` applied (Ward's
    heights never decrease, so this is the dendrogram cut). Runs ``Q - 1`` batched steps on the device.

    Args:
        text: ``[Q, D]`` text embeddings.
        threshold: the cut height (their per-dataset ``h_threshold``).

    Returns:
        ``[Q]`` long: a cluster id per query (the lowest query index of its cluster).
    """
    q = text.shape[0]
    dist = _cosine_distances(text.float()).double()
    device = text.device
    idx = torch.arange(q, device=device)
    size = torch.ones(q, dtype=torch.float64, device=device)
    active = torch.ones(q, dtype=torch.bool, device=device)
    label = idx.clone()
    upper = idx[:, None] < idx[None, :]
    for _ in range(q - 1):  # merges (classes, not patches or windows)
        valid = upper & active[:, None] & active[None, :]
        flat = dist.masked_fill(~valid, float("inf")).flatten()
        m = flat.argmin()
        height = flat.gather(0, m[None])[0]
        lo, hi = m // q, m % q
        merge = height <= threshold  # a 0-d bool tensor: the rest of the step is masked, never branched on
        e_lo, e_hi = idx == lo, idx == hi
        d_lo = dist.index_select(0, lo[None])[0]  # [Q]
        d_hi = dist.index_select(0, hi[None])[0]
        s_lo, s_hi = size.index_select(0, lo[None]), size.index_select(0, hi[None])
        t = 1.0 / (s_lo + s_hi + size)
        new = torch.sqrt(
            ((size + s_lo) * t * d_lo**2 + (size + s_hi) * t * d_hi**2 - size * t * height**2).clamp_min(0)
        )
        new = torch.where(merge, new, d_lo)  # [Q] distances of the merged cluster
        row = torch.where(merge & e_lo[:, None], new[None, :], dist)
        dist = torch.where(merge & e_lo[None, :], new[:, None], row)
        size = torch.where(merge & e_lo, s_lo + s_hi, size)
        active = active & ~(merge & e_hi)
        label = torch.where(merge & (label == hi), lo, label)
    return label


def object_context_text(
    text: torch.Tensor,
    patch_feats: torch.Tensor,
    global_sim: torch.Tensor,
    clusters: torch.Tensor,
    weight: float,
    top_k: int = 2,
) -> torch.Tensor:
    """Eq. 10-11 as the authors' ``hierarchical_prompt``: per cluster of classes, the class the image most likely
    shows (highest ``global_sim`` in the cluster) gets its text embedding moved towards the mean of its ``top_k``
    most similar patches; the other classes keep theirs.

    ``t'_c = norm((1 - weight) · t_c + weight · norm(mean_{top_k} p̂))`` for the chosen c; ``p̂`` the L2-normalised
    patch features.

    Args:
        text: ``[B, Q, D]`` text embeddings (L2-normalised).
        patch_feats: ``[B, N, D]`` patch features (any norm).
        global_sim: ``[B, Q]`` the image-text similarity choosing each cluster's class.
        clusters: ``[Q]`` cluster ids (:func:`ward_clusters`).
        weight: the mix weight (their ``mean_vector_weight``).
        top_k: patches averaged (their 2).

    Returns:
        ``[B, Q, D]``.
    """
    q = text.shape[1]
    same = clusters[:, None] == clusters[None, :]  # [Q, Q]
    in_cluster = global_sim[:, None, :].masked_fill(~same[None], float("-inf"))  # [B, Q, Q]
    chosen = in_cluster.argmax(-1) == torch.arange(q, device=text.device)  # [B, Q] first maximum, as np.argmax
    t = F.normalize(text, dim=-1)
    p = F.normalize(patch_feats, dim=-1)
    sims = t @ p.transpose(1, 2)  # [B, Q, N]
    top = sims.topk(min(top_k, p.shape[1]), dim=-1).indices  # [B, Q, k]
    picked = p.gather(1, top.flatten(1)[..., None].expand(-1, -1, p.shape[-1])).view(*top.shape, -1)
    mean = F.normalize(picked.mean(2), dim=-1)  # [B, Q, D]
    adjusted = F.normalize((1 - weight) * t + weight * mean, dim=-1)
    return torch.where(chosen[..., None], adjusted, text)
