"""The text-embedding disk cache: a second run with the same classes skips the text encoder; anything that changes
the embeddings changes the key; unreadable entries are rebuilt; the cache can be switched off."""

import pytest
import torch

from alignclip.models.clip import create_clip
from alignclip.pipeline import text_cache
from alignclip.pipeline.text_cache import cached_text_embeddings, set_text_cache, text_cache_dir, text_cache_key


@pytest.fixture
def cache(tmp_path):
    set_text_cache(tmp_path)
    yield tmp_path
    text_cache._override.clear()


@pytest.fixture(scope="module")
def clip():
    return create_clip("tiny", "none")


def _counting_build(value: torch.Tensor):
    calls = []

    def build():
        calls.append(1)
        return value.clone()

    return build, calls


def test_second_call_reads_the_disk_entry(cache, clip):
    emb = torch.nn.functional.normalize(torch.randn(2, clip.embed_dim), dim=-1)
    build, calls = _counting_build(emb)
    first = cached_text_embeddings(clip, ["road", "tree"], ["a photo of a {}."], "cpu", build)
    second = cached_text_embeddings(clip, ["road", "tree"], ["a photo of a {}."], "cpu", build)
    assert calls == [1] and torch.equal(first, second) and torch.equal(second, emb)
    assert len(list(cache.glob("*.pt"))) == 1 and not list(cache.glob(".*tmp*"))  # atomic: no temporary left


def test_key_changes_with_queries_templates_and_weights(clip):
    base, meta = text_cache_key(clip, ["road"], ["a {}."])
    assert text_cache_key(clip, ["road"], ["a {}."])[0] == base  # deterministic
    assert text_cache_key(clip, ["roads"], ["a {}."])[0] != base
    assert text_cache_key(clip, ["road"], ["the {}."])[0] != base
    other = create_clip("tiny-b16", "none")
    assert text_cache_key(other, ["road"], ["a {}."])[0] != base
    assert meta["weights"].startswith("random:") and meta["model"] == clip.name


def test_corrupt_or_foreign_entry_is_rebuilt(cache, clip):
    emb = torch.ones(1, clip.embed_dim)
    digest, _ = text_cache_key(clip, ["road"], ["a {}."])
    (cache / f"{digest}.pt").write_bytes(b"not a torch file")
    build, calls = _counting_build(emb)
    assert torch.equal(cached_text_embeddings(clip, ["road"], ["a {}."], "cpu", build), emb) and calls == [1]
    torch.save({"meta": "{}", "embeds": torch.zeros(1, clip.embed_dim)}, cache / f"{digest}.pt")  # another key's
    assert torch.equal(cached_text_embeddings(clip, ["road"], ["a {}."], "cpu", build), emb) and calls == [1, 1]


def test_switched_off(monkeypatch, tmp_path, clip):
    set_text_cache(None)
    try:
        assert text_cache_dir() is None
        build, calls = _counting_build(torch.ones(1, clip.embed_dim))
        cached_text_embeddings(clip, ["road"], ["a {}."], "cpu", build)
        cached_text_embeddings(clip, ["road"], ["a {}."], "cpu", build)
        assert calls == [1, 1]
    finally:
        text_cache._override.clear()
    monkeypatch.setenv("ALIGNCLIP_TEXT_CACHE", "off")
    assert text_cache_dir() is None
    monkeypatch.setenv("ALIGNCLIP_TEXT_CACHE", str(tmp_path / "t"))
    assert text_cache_dir() == tmp_path / "t"


def test_segmentor_uses_the_disk_cache(cache, monkeypatch):
    from alignclip.pipeline import runtime
    from alignclip.pipeline.config import build_config
    from alignclip.pipeline.segmentor import Segmentor

    config = build_config("segearth-ov", smoke=True)
    runtime.clear_model_cache()  # nothing in memory from earlier tests: the first segmentor encodes and writes
    first = Segmentor(config, ["road", "tree,forest"]).text_embeds
    runtime.clear_model_cache()  # a new process: new model objects, nothing in memory

    def fail(*args, **kwargs):
        raise AssertionError("the text encoder ran although the disk cache holds the embeddings")

    monkeypatch.setattr(runtime, "build_text_embeddings", fail)
    second = Segmentor(config, ["road", "tree,forest"]).text_embeds
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_cli_no_cache_and_progress_lines(cache, tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from alignclip.cli.main import main
    from alignclip.pipeline import runtime

    image = tmp_path / "scene.png"
    Image.fromarray((np.random.default_rng(0).random((64, 96, 3)) * 255).astype(np.uint8)).save(image)
    args = ["segment", str(image), "--classes", "road", "tree", "--smoke", "--set", "long_side=224"]
    runtime.clear_model_cache()
    try:
        assert main([*args, "--no-cache"]) == 0
        assert not list(cache.glob("*.pt"))  # --no-cache: nothing read, nothing written
        assert "encoding 2 queries x 80 templates" in capsys.readouterr().err
    finally:
        text_cache._override.clear()
    set_text_cache(cache)
    runtime.clear_model_cache()
    assert main(args) == 0 and len(list(cache.glob("*.pt"))) == 1
    runtime.clear_model_cache()
    assert main(args) == 0
    assert "read from the cache" in capsys.readouterr().err
