"""Tests of the VFM wrapper (CCE, paper Sec. 3.3): tiny random models only, no downloads."""

from __future__ import annotations

import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import huggingface_hub.constants as hf_constants  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from torch import Tensor  # noqa: E402

from alignclip.errors import (  # noqa: E402
    CheckpointError,
    ConfigError,
    InputError,
    WeightsNotFoundError,
)
from alignclip.models.vfm import VFM, create_vfm  # noqa: E402
from alignclip.models.vfm_builders import list_vfms  # noqa: E402

TINY = ["tiny", "tiny_sam"]
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _images(batch: int = 2, size: int = 224, seed: int = 0) -> Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _last_block_io(vfm: VFM, images: Tensor) -> tuple[Tensor, Tensor]:
    """Input and output of the last block, captured by our own hooks (independent of VFM)."""
    captured: dict[str, Tensor] = {}

    def hook(module: torch.nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        captured["in"], captured["out"] = inputs[0], output

    handle = vfm.model.blocks[-1].register_forward_hook(hook)
    try:
        with torch.no_grad():
            vfm.model.forward_features(images)
    finally:
        handle.remove()
    return captured["in"], captured["out"]


def _block_from_attention(vfm: VFM, x_in: Tensor, attn: Tensor) -> Tensor:
    """Recompute the last block's output with attention [B, heads, T, T] applied to its v."""
    blk = vfm.model.blocks[-1]
    shape = x_in.shape
    batch, dim = shape[0], shape[-1]
    x = x_in.reshape(batch, -1, dim)
    n_tokens, heads = x.shape[1], vfm.num_heads
    with torch.no_grad():
        qkv = blk.attn.qkv(blk.norm1(x)).view(batch, n_tokens, 3, heads, dim // heads)
        v = qkv[:, :, 2].transpose(1, 2)  # [B, heads, T, hd]
        mixed = (attn @ v).transpose(1, 2).reshape(batch, n_tokens, dim)
        x = x + blk.ls1(blk.attn.proj(mixed))
        x = x + blk.ls2(blk.mlp(blk.norm2(x)))
    return x.reshape(shape)


def test_list_vfms() -> None:
    assert list_vfms() == [
        "dino_vitb16",
        "dino_vitb8",
        "dino_vits16",
        "dino_vits8",
        "dinov2_vitb14_reg",
        "dinov2_vitl14_reg",
        "dinov2_vits14_reg",
        "sam_vitb",
        "tiny",
        "tiny_sam",
    ]


@pytest.mark.parametrize("name", TINY)
def test_tiny_shapes_and_attributes(name: str) -> None:
    vfm = create_vfm(name)
    feats, attn = vfm(_images())
    assert feats.shape == (2, 14, 14, 64)
    assert attn.shape == (2, 196, 196)
    assert attn.dtype == torch.float32
    assert vfm.patch_size == 16 and vfm.embed_dim == 64 and vfm.num_heads == 4
    assert vfm.num_prefix_tokens == (1 if name == "tiny" else 0)
    assert vfm.native_size == (None if name == "tiny" else 224)
    torch.testing.assert_close(vfm.mean, torch.tensor([0.485, 0.456, 0.406]))
    torch.testing.assert_close(vfm.std, torch.tensor([0.229, 0.224, 0.225]))
    assert not vfm.training and not vfm.model.training
    assert not any(p.requires_grad for p in vfm.parameters())
    vfm.train()
    assert not vfm.model.training  # frozen: stays in eval mode
    assert sum(p.numel() for p in vfm.parameters()) < 1_000_000  # a few MB at most


def test_tiny_vit_any_multiple_of_patch() -> None:
    feats, attn = create_vfm("tiny")(_images(1, 224)[..., :160, :96])
    assert feats.shape == (1, 10, 6, 64) and attn.shape == (1, 60, 60)


@pytest.mark.parametrize("name", TINY)
def test_attention_rows(name: str) -> None:
    vfm = create_vfm(name)
    images = _images()
    full = vfm.attention_per_head(images)  # [B, heads, T, T] over all tokens
    n_tokens = 196 + vfm.num_prefix_tokens
    assert full.shape == (2, 4, n_tokens, n_tokens)
    torch.testing.assert_close(full.sum(-1), torch.ones(2, 4, n_tokens))
    _, attn = vfm(images)
    p = vfm.num_prefix_tokens
    torch.testing.assert_close(attn, full.mean(1)[:, p:, p:])
    assert attn.min() >= 0
    assert attn.sum(-1).max() <= 1 + 1e-6
    if name == "tiny":  # the CLS column is dropped: rows sum to less than 1, not renormalised
        assert attn.sum(-1).max() < 1


@pytest.mark.parametrize("name", TINY)
def test_attention_reproduces_the_block_output(name: str) -> None:
    vfm = create_vfm(name)
    images = _images()
    x_in, x_out = _last_block_io(vfm, images)
    recomputed = _block_from_attention(vfm, x_in, vfm.attention_per_head(images))
    torch.testing.assert_close(recomputed, x_out, atol=1e-5, rtol=1e-5)


# tiny_sam: native 224 (14x14), windowed blocks of 7x7 patches. 160 → 10x10 (padded to 14x14 in the
# windowed block), 448 → 28x28, 96x160 → 6x10 (non-square, padded), 112 → 7x7 (one window).
SAM_SIZES = [(224, 224), (160, 160), (448, 448), (96, 160), (112, 112)]


@pytest.mark.parametrize(("height", "width"), SAM_SIZES)
def test_tiny_sam_any_multiple_of_patch(height: int, width: int) -> None:
    vfm = create_vfm("tiny_sam")
    images = _images(2, 448)[..., :height, :width]
    grid = (height // 16, width // 16)
    n_tokens = grid[0] * grid[1]
    feats, attn = vfm(images)
    assert feats.shape == (2, *grid, 64) and attn.shape == (2, n_tokens, n_tokens)
    assert torch.isfinite(feats).all() and torch.isfinite(attn).all()
    torch.testing.assert_close(attn.sum(-1), torch.ones(2, n_tokens))  # SAM: no prefix token
    full = vfm.attention_per_head(images)
    torch.testing.assert_close(full.sum(-1), torch.ones(2, 4, n_tokens))


@pytest.mark.parametrize(("height", "width"), SAM_SIZES)
def test_sam_rel_pos_bias_matches_timm_at_any_size(height: int, width: int) -> None:
    # timm's own block (interpolated rel-pos tables, resampled abs pos embed) against our attention.
    vfm = create_vfm("tiny_sam")
    images = _images(2, 448)[..., :height, :width]
    x_in, x_out = _last_block_io(vfm, images)
    assert x_out.shape == (2, height // 16, width // 16, 64)
    recomputed = _block_from_attention(vfm, x_in, vfm.attention_per_head(images))
    torch.testing.assert_close(recomputed, x_out, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("height", "width"), [(224, 224), (160, 160), (96, 160)])
def test_sam_rel_pos_bias_is_included(height: int, width: int) -> None:
    # Without SAM's relative position bias the recomputed block output is clearly off.
    vfm = create_vfm("tiny_sam")
    images = _images(2, 224)[..., :height, :width]
    n_tokens = (height // 16) * (width // 16)
    x_in, x_out = _last_block_io(vfm, images)
    blk = vfm.model.blocks[-1]
    assert blk.attn.rel_pos_h.shape[0] == 27  # 2 * 14 - 1: interpolated to 2 * h - 1 at other sizes
    x = x_in.reshape(2, n_tokens, 64)
    with torch.no_grad():
        qkv = blk.attn.qkv(blk.norm1(x)).view(2, n_tokens, 3, 4, 16).permute(2, 0, 3, 1, 4)
        plain = (qkv[0] * blk.attn.scale @ qkv[1].transpose(-1, -2)).softmax(-1)
    wrong = _block_from_attention(vfm, x_in, plain)
    assert (wrong - x_out).abs().max() > 1e-2


@pytest.mark.parametrize("name", TINY)
def test_patch_feats_are_final_tokens(name: str) -> None:
    vfm = create_vfm(name)
    images = _images()
    feats, _ = vfm(images)
    _, block_out = _last_block_io(vfm, images)
    if name == "tiny":  # after the final LayerNorm, CLS dropped
        with torch.no_grad():
            expected = vfm.model.norm(block_out)[:, 1:].reshape(2, 14, 14, 64)
    else:  # SAM: block output before the neck
        expected = block_out
    torch.testing.assert_close(feats, expected)


@pytest.mark.parametrize("name", TINY)
def test_deterministic_random_weights(name: str) -> None:
    rng_state = torch.get_rng_state()
    a, b = create_vfm(name, seed=0), create_vfm(name, seed=0)
    assert torch.equal(torch.get_rng_state(), rng_state)  # global RNG untouched
    for (key, wa), wb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(wa, wb), key
    images = _images()
    fa, aa = a(images)
    fb, ab = b(images)
    assert torch.equal(fa, fb) and torch.equal(aa, ab)
    c = create_vfm(name, seed=1)
    assert not torch.equal(c(images)[0], fa)


@pytest.mark.parametrize(("name", "suffix"), [("tiny", ".pth"), ("tiny_sam", ".safetensors")])
def test_local_weights_round_trip(name: str, suffix: str, tmp_path) -> None:
    source = create_vfm(name, seed=3)
    path = tmp_path / f"{name}{suffix}"
    state = {k: v.contiguous() for k, v in source.model.state_dict().items()}
    torch.save(state, path) if suffix == ".pth" else save_file(state, str(path))
    loaded = create_vfm(name, pretrained=str(path), seed=0)
    images = _images()
    for got, want in zip(loaded(images), source(images), strict=True):
        assert torch.equal(got, want)


def test_local_weights_errors(tmp_path) -> None:
    with pytest.raises(WeightsNotFoundError, match="not found"):
        create_vfm("tiny", pretrained=str(tmp_path / "missing.pth"))
    path = tmp_path / "tiny.pth"
    torch.save(create_vfm("tiny").model.state_dict(), path)
    with pytest.raises(CheckpointError, match="does not fit 'tiny_sam'"):
        create_vfm("tiny_sam", pretrained=str(path))


def test_default_weights_missing_offline(monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    with pytest.raises(WeightsNotFoundError) as info:
        create_vfm("dino_vitb16", pretrained="default")
    message = str(info.value)
    assert "vit_base_patch16_224.dino" in message
    assert "--vfm-pretrained" in message
    assert "\n" not in message


def test_tiny_default_is_random() -> None:
    a, b = create_vfm("tiny", pretrained="default"), create_vfm("tiny", pretrained="none")
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def test_bad_names_raise() -> None:
    with pytest.raises(ConfigError, match="unknown VFM .dinov9.; use one of dino_vitb16, dino_vitb8"):
        create_vfm("dinov9")
    with pytest.raises(ConfigError, match="device"):
        create_vfm("tiny", device="not-a-device")


def test_prepare_undoes_clip_and_resizes() -> None:
    vfm = create_vfm("tiny")
    clip_images = torch.zeros(1, 3, 224, 224)  # CLIP-normalised 0 == CLIP's mean colour
    out = vfm.prepare(clip_images, CLIP_MEAN, CLIP_STD)
    expected = (torch.tensor(CLIP_MEAN) - vfm.mean) / vfm.std
    assert out.shape == (1, 3, 224, 224)
    torch.testing.assert_close(out[0, :, 5, 7], expected)
    assert vfm.prepare(_images(1), CLIP_MEAN, CLIP_STD, size=112).shape == (1, 3, 112, 112)
    with pytest.raises(InputError, match="multiple of its patch size 16"):
        vfm.prepare(_images(1), CLIP_MEAN, CLIP_STD, size=100)


@pytest.mark.parametrize("name", TINY)
@pytest.mark.parametrize(
    ("size", "expected"),
    [(None, (448, 320)), (112, (112, 112)), ((64, 96), (64, 96)), ("native", None)],
)
def test_prepare_sizes(name: str, size, expected) -> None:
    # None keeps the window's size (vfm_resolution=window), an int or (h, w) resizes (grid_align=clip
    # passes CLIP's grid times the VFM patch), native_size is SAM's training size (None for DINO).
    vfm = create_vfm(name)
    images = _images(1, 448)[..., :320]
    if size == "native":
        size = vfm.native_size
        expected = (224, 224) if name == "tiny_sam" else (448, 320)
    out = vfm.prepare(images, CLIP_MEAN, CLIP_STD, size)
    assert out.shape == (1, 3, *expected)
    feats, _ = vfm(out)
    assert feats.shape[1:3] == (expected[0] // 16, expected[1] // 16)


def test_bad_images_raise() -> None:
    with pytest.raises(InputError, match="patch size 16"):
        create_vfm("tiny_sam")(torch.zeros(1, 3, 200, 224))
    with pytest.raises(InputError, match=r"\[B, 3, H, W\]"):
        create_vfm("tiny")(torch.zeros(3, 224, 224))
    with pytest.raises(InputError, match="patch size 16"):
        create_vfm("tiny")(torch.zeros(1, 3, 200, 224))


def test_real_dino_vitb16_architecture_random() -> None:
    vfm = create_vfm("dino_vitb16", pretrained="none")
    assert vfm.patch_size == 16 and vfm.native_size is None and vfm.embed_dim == 768
    feats, attn = vfm(_images(1))
    assert feats.shape == (1, 14, 14, 768)
    assert attn.shape == (1, 196, 196)


@pytest.mark.slow
def test_real_sam_vitb_architecture_random_at_window_size() -> None:
    # The real SAM ViT-B (random weights, no download) on one 224x224 window: 14x14 grid, the CLIP
    # grid. At its native 1024 the same forward costs ~20x more (see decision D12).
    vfm = create_vfm("sam_vitb", pretrained="none")
    assert vfm.native_size == 1024 and vfm.patch_size == 16 and vfm.embed_dim == 768
    images = vfm.prepare(_images(1), CLIP_MEAN, CLIP_STD)
    start = time.perf_counter()
    feats, attn = vfm(images)
    seconds = time.perf_counter() - start
    assert feats.shape == (1, 14, 14, 768) and attn.shape == (1, 196, 196)
    assert torch.isfinite(feats).all()
    torch.testing.assert_close(attn.sum(-1), torch.ones(1, 196))
    assert seconds < 30, f"one 224x224 SAM ViT-B forward took {seconds:.1f} s"
