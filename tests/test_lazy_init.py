"""Models whose weights are loaded next are built without drawing random initial weights (cold start)."""

import pytest
import torch

from alignclip.models.clip import create_clip, state_digest
from alignclip.models.lazy_init import INITIALISERS, skip_weight_init


def test_no_random_draws_inside_and_everything_restored_after():
    before = {name: getattr(torch.nn.init, name) for name in INITIALISERS}
    state = torch.random.get_rng_state()
    with skip_weight_init():
        torch.nn.Linear(64, 64)
        torch.nn.LayerNorm(8)
        torch.nn.MultiheadAttention(16, 2)
        assert torch.equal(torch.random.get_rng_state(), state)  # nothing was drawn
    assert {name: getattr(torch.nn.init, name) for name in INITIALISERS} == before
    with pytest.raises(RuntimeError), skip_weight_init():
        raise RuntimeError("a failed build")
    assert {name: getattr(torch.nn.init, name) for name in INITIALISERS} == before
    torch.nn.Linear(4, 4)
    assert not torch.equal(torch.random.get_rng_state(), state)  # initialisers draw again


def test_timm_truncated_normal_is_skipped_and_restored():
    import timm.layers.weight_init as w

    original = w._trunc_normal_
    t = torch.full((3,), 7.0)
    with skip_weight_init():
        w.trunc_normal_(t, std=0.02)
        assert torch.equal(t, torch.full((3,), 7.0))
    assert w._trunc_normal_ is original
    w.trunc_normal_(t, std=0.02)
    assert t.abs().max() < 1


def test_clip_from_a_state_dict_file_has_exactly_the_file_weights(tmp_path):
    random_clip = create_clip("tiny-b16", "none")
    state = {k: v.clone() for k, v in random_clip.model.state_dict().items()}
    path = tmp_path / "clip.pt"
    torch.save(state, path)
    loaded = create_clip("tiny-b16", str(path))
    assert state_digest(loaded.model.state_dict()) == state_digest(state)
    names = {k for k, _ in loaded.model.named_buffers()} - set(state)  # buffers the model builds itself
    for key in names:
        torch.testing.assert_close(
            dict(loaded.model.named_buffers())[key], dict(random_clip.model.named_buffers())[key]
        )


def test_weight_file_digest_is_cached_and_renewed_when_the_file_changes(tmp_path, monkeypatch):
    import os

    from alignclip.io import cache

    monkeypatch.setenv("ALIGNCLIP_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "w.pt"
    path.write_bytes(b"weights v1")
    first = cache.cached_file_sha256(path)
    assert first == cache.file_sha256(path) and len(list((tmp_path / "cache" / "sha256").iterdir())) == 1
    calls = []
    monkeypatch.setattr(cache, "file_sha256", lambda p: calls.append(p) or "0" * 64)
    assert cache.cached_file_sha256(path) == first and not calls  # read from the cache, not hashed
    path.write_bytes(b"weights v2, longer")  # another size: another key
    os.utime(path, ns=(1, 2))
    assert cache.cached_file_sha256(path) == "0" * 64 and calls
