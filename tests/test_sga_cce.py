import math

import pytest
import torch

from alignclip.errors import ConfigError, InputError
from alignclip.ops.cce import cluster_mask, cosine_affinity, fuse_logits, propagate_within_clusters
from alignclip.ops.postprocess import predict_labels
from alignclip.ops.sga import patch_logits, self_guided_alignment


def test_sga_hand_checkable():
    # two patches on the axes, text close to patch 0
    patches = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    text = torch.tensor([[0.8, 0.6]])
    out = self_guided_alignment(patches, text, alpha=0.5)
    expected = torch.tensor([[0.9, 0.3]]) / math.sqrt(0.9**2 + 0.3**2)
    torch.testing.assert_close(out, expected)


def test_sga_alpha_zero_and_one():
    g = torch.Generator().manual_seed(0)
    patches, text = torch.randn(20, 8, generator=g), torch.randn(3, 8, generator=g)
    torch.testing.assert_close(self_guided_alignment(patches, text, 0.0), torch.nn.functional.normalize(text, dim=-1))
    out = self_guided_alignment(patches, text, 1.0)
    sims = torch.nn.functional.normalize(text, dim=-1) @ torch.nn.functional.normalize(patches, dim=-1).T
    best = torch.nn.functional.normalize(patches, dim=-1)[sims.argmax(1)]
    torch.testing.assert_close(out, best)


def test_sga_top_n_averages_prototypes():
    patches = torch.tensor([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    text = torch.tensor([[1.0, 0.9]])
    out = self_guided_alignment(patches, text, alpha=1.0, top_n=2)
    torch.testing.assert_close(out, torch.tensor([[1.0, 1.0]]) / math.sqrt(2))


def test_sga_batched_equals_loop():
    g = torch.Generator().manual_seed(1)
    patches, text = torch.randn(4, 30, 16, generator=g), torch.randn(5, 16, generator=g)
    out = self_guided_alignment(patches, text, 0.3, top_n=2)
    for b in range(4):
        torch.testing.assert_close(out[b], self_guided_alignment(patches[b], text, 0.3, top_n=2))


@pytest.mark.parametrize("alpha", [-0.1, 1.5])
def test_sga_alpha_out_of_range(alpha):
    with pytest.raises(ConfigError, match="alpha"):
        self_guided_alignment(torch.randn(4, 2), torch.randn(1, 2), alpha)


def test_cluster_mask_eq10():
    m = cluster_mask(torch.tensor([0, 1, 0]))
    assert m.tolist() == [[True, False, True], [False, True, False], [True, False, True]]


def test_propagate_hand_checkable():
    affinity = torch.tensor([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0], [2.0, 0.0, 2.0]])
    ids = torch.tensor([0, 1, 0])
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
    out = propagate_within_clusters(affinity, ids, logits)
    # row 0: weights (1, 0, 3)/4 -> (0.25, 2.25); row 1: only itself; row 2: (2, 0, 2)/4 -> (0.5, 1.5)
    torch.testing.assert_close(out, torch.tensor([[0.25, 2.25], [0.0, 1.0], [0.5, 1.5]]))


def test_propagate_preserves_constants_and_batches():
    g = torch.Generator().manual_seed(2)
    aff = torch.rand(3, 10, 10, generator=g)
    ids = torch.randint(0, 3, (3, 10), generator=g)
    const = torch.full((3, 10, 4), 2.5)
    torch.testing.assert_close(propagate_within_clusters(aff, ids, const), const)
    logits = torch.randn(3, 10, 4, generator=g)
    out = propagate_within_clusters(aff, ids, logits)
    for b in range(3):
        torch.testing.assert_close(out[b], propagate_within_clusters(aff[b], ids[b], logits[b]))


def test_cosine_affinity_range():
    a = cosine_affinity(torch.tensor([[1.0, 0.0], [-1.0, 0.0], [1.0, 1.0]]))
    torch.testing.assert_close(a, torch.tensor([[1.0, 0.0, 0.5**0.5], [0.0, 1.0, 0.0], [0.5**0.5, 0.0, 1.0]]))


def test_fuse_eq14():
    refined = torch.ones(1, 2, 2, 2)
    up = torch.zeros(1, 2, 4, 4)
    out = fuse_logits(refined, up, beta=0.25)
    torch.testing.assert_close(out, torch.full((1, 2, 4, 4), 0.25))
    with pytest.raises(ConfigError, match="beta"):
        fuse_logits(refined, up, beta=1.2)


def test_patch_logits_eq8_hand_checkable():
    # two patches: (3, 4) -> unit (0.6, 0.8); (0, 2) -> (0, 1); texts (1, 0) and (0, 1)
    patch = torch.tensor([[3.0, 0.0], [4.0, 2.0]]).view(1, 2, 1, 2)  # [B=1, D=2, h=1, w=2]
    text = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])  # [B=1, Q=2, D=2]
    s = patch_logits(patch, text)
    assert s.shape == (1, 2, 1, 2)
    assert s[0, :, 0, 0].tolist() == pytest.approx([0.6, 0.8])
    assert s[0, :, 0, 1].tolist() == pytest.approx([0.0, 1.0])
    with pytest.raises(InputError, match="dim"):
        patch_logits(patch, torch.ones(1, 2, 3))


def test_predict_labels_eq15_argmax_and_threshold():
    probs = torch.tensor([[0.7, 0.2], [0.3, 0.45], [0.0, 0.35]])  # [K=3, 2 pixels]
    assert predict_labels(probs).tolist() == [0, 1]  # Eq. 15: argmax
    assert predict_labels(probs, prob_thd=0.5, bg_idx=2).tolist() == [0, 2]  # best 0.45 < 0.5 -> background
