"""Tests of the batched K-Means used by CCE (paper Eq. 9)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.datasets import make_blobs
from sklearn.metrics import adjusted_rand_score

from alignclip.errors import ConfigError, InputError
from alignclip.ops.kmeans import kmeans, sq_distances


def _blobs(seed: int, n: int = 90, k: int = 3, dim: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Well-separated Gaussian blobs: centres 20 apart per axis, std 0.5."""
    rng = np.random.default_rng(seed)
    centres = rng.uniform(-1.0, 1.0, size=(k, dim)) + 20.0 * np.eye(k, dim)
    pts, truth = make_blobs(n_samples=n, centers=centres, cluster_std=0.5, random_state=seed, shuffle=True)
    return pts.astype(np.float32), truth


def test_hand_checkable_1d() -> None:
    # Points 0, 0.1, 10, 10.1 with K=2: clusters {0, 0.1} and {10, 10.1}, centroids 0.05 and 10.05.
    x = torch.tensor([[[0.0], [0.1], [10.0], [10.1]]])
    labels, centroids = kmeans(x, n_clusters=2)
    assert labels.tolist() == [[0, 0, 1, 1]]
    assert labels.dtype == torch.long
    torch.testing.assert_close(centroids, torch.tensor([[[0.05], [10.05]]]))


def test_hand_checkable_1d_every_start_converges() -> None:
    # Starting from both points of one pair still ends at the right split (checked by hand:
    # 0 | 0.1, 10, 10.1 -> centroids 0, 6.73 -> 0, 0.1 | 10, 10.1), for any seed and one restart.
    x = torch.tensor([[[0.0], [0.1], [10.0], [10.1]]])
    for seed in range(10):
        labels, _ = kmeans(x, n_clusters=2, n_init=1, seed=seed)
        assert labels.tolist() == [[0, 0, 1, 1]]


def test_sq_distances_hand_values() -> None:
    x = torch.tensor([[[0.0, 0.0], [3.0, 4.0]]])
    c = torch.tensor([[[0.0, 0.0], [3.0, 0.0]]])
    expected = torch.tensor([[[0.0, 9.0], [25.0, 16.0]]])
    torch.testing.assert_close(sq_distances(x, c), expected)


def test_blobs_recovered_like_sklearn() -> None:
    pts, truth = _blobs(seed=0)
    labels, centroids = kmeans(torch.from_numpy(pts)[None], n_clusters=3, n_init=8, seed=0)
    ours = labels[0].numpy()
    ref = KMeans(n_clusters=3, n_init=10, random_state=0).fit(pts)
    assert adjusted_rand_score(truth, ours) == 1.0
    assert adjusted_rand_score(ref.labels_, ours) == 1.0
    # Same centroids up to the label permutation (ours are canonical).
    perm = [int(ref.labels_[np.flatnonzero(ours == k)[0]]) for k in range(3)]
    np.testing.assert_allclose(centroids[0].numpy(), ref.cluster_centers_[perm], atol=1e-4)


def test_labels_are_canonical() -> None:
    pts, _ = _blobs(seed=1)
    labels, _ = kmeans(torch.from_numpy(pts)[None], n_clusters=3, n_init=8)
    row = labels[0].tolist()
    first_seen = [row.index(k) for k in range(3)]
    assert row[0] == 0
    assert first_seen == sorted(first_seen)


def test_same_seed_identical_and_seed_independent_on_easy_data() -> None:
    x = torch.from_numpy(_blobs(seed=2)[0])[None]
    a = kmeans(x, n_clusters=3, n_init=8, seed=5)
    b = kmeans(x, n_clusters=3, n_init=8, seed=5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = kmeans(x, n_clusters=3, n_init=8, seed=6)
    assert torch.equal(a[0], c[0])  # canonical labels: the partition, not the restart order


def test_batch_equals_each_alone() -> None:
    problems = [torch.from_numpy(_blobs(seed=s)[0]) for s in (3, 4, 5)]
    batch_labels, batch_centroids = kmeans(torch.stack(problems), n_clusters=3, n_init=8)
    for b, pts in enumerate(problems):
        labels, centroids = kmeans(pts[None], n_clusters=3, n_init=8)
        assert torch.equal(batch_labels[b], labels[0])
        torch.testing.assert_close(batch_centroids[b], centroids[0])


def test_n_clusters_equal_to_n_gives_singletons() -> None:
    x = torch.randn(2, 7, 4, generator=torch.Generator().manual_seed(0))
    labels, centroids = kmeans(x, n_clusters=7)
    # Each point is its own cluster; canonical ids follow the point order.
    assert labels.tolist() == [list(range(7))] * 2
    torch.testing.assert_close(centroids, x)


def test_single_cluster_is_the_mean() -> None:
    x = torch.tensor([[[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]])
    labels, centroids = kmeans(x, n_clusters=1)
    assert labels.tolist() == [[0, 0, 0]]
    torch.testing.assert_close(centroids, torch.tensor([[[2.0, 3.0]]]))


def test_dtype_kept_and_float32_maths() -> None:
    x64 = torch.from_numpy(_blobs(seed=6)[0]).double()[None]
    l64, c64 = kmeans(x64, n_clusters=3, n_init=8)
    l32, c32 = kmeans(x64.float(), n_clusters=3, n_init=8)
    assert c64.dtype == torch.float64 and c32.dtype == torch.float32
    assert torch.equal(l64, l32)
    lh, ch = kmeans(x64.half(), n_clusters=3, n_init=8)
    assert ch.dtype == torch.float16
    assert torch.equal(lh, l32)


def test_too_many_clusters_raises() -> None:
    with pytest.raises(ConfigError, match=r"K_c=5 exceeds the number of patches N=4"):
        kmeans(torch.zeros(1, 4, 2), n_clusters=5)
    with pytest.raises(ConfigError, match=r"K_c=0"):
        kmeans(torch.zeros(1, 4, 2), n_clusters=0)


def test_bad_arguments_raise() -> None:
    with pytest.raises(InputError, match=r"\[B, N, D\]"):
        kmeans(torch.zeros(4, 2), n_clusters=2)
    with pytest.raises(ConfigError, match="n_init"):
        kmeans(torch.zeros(1, 4, 2), n_clusters=2, n_init=0)
    with pytest.raises(ConfigError, match="n_iter"):
        kmeans(torch.zeros(1, 4, 2), n_clusters=2, n_iter=-1)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    x = torch.from_numpy(np.concatenate([_blobs(seed=s)[0][None] for s in (7, 8)]))
    cpu_labels, cpu_centroids = kmeans(x, n_clusters=3, n_init=8)
    gpu_labels, gpu_centroids = kmeans(x.cuda(), n_clusters=3, n_init=8)
    assert gpu_labels.device.type == "cuda"
    assert torch.equal(gpu_labels.cpu(), cpu_labels)
    torch.testing.assert_close(gpu_centroids.cpu(), cpu_centroids, atol=1e-4, rtol=1e-4)
