"""Named CLIP backbones: the registry, their published weights, create_clip / build_config with them, the VFM input
size for any pair of patch sizes (vfm_input_size), and the segmentor end to end on tiny CLIPs of patch 14, 16, 32."""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import math
import re

import huggingface_hub.constants
import numpy as np
import open_clip
import pytest
import torch

from alignclip.errors import CheckpointError, ConfigError, WeightsNotFoundError
from alignclip.models.backbones import BACKBONES, Backbone, backbone_weights, list_backbones, resolve_backbone
from alignclip.models.clip import built_activation, create_clip, register_model_configs
from alignclip.models.vfm import create_vfm
from alignclip.models.vfm_builders import VFM_SPECS
from alignclip.ops.cce import vfm_input_size
from alignclip.pipeline.config import SegmentorConfig, build_config, tiny_stand_in
from alignclip.pipeline.segmentor import Segmentor

CLASSES = ["road", "tree", "car"]


def config_patch(name: str) -> int:
    register_model_configs()
    return int(open_clip.get_model_config(name)["vision_cfg"]["patch_size"])


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """An empty Hugging Face cache in ``tmp_path`` (the user's own cache is never read)."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))  # read when the module was imported
    return cache


def put_in_cache(cache, repo: str, filename: str, write) -> str:
    """A file in the Hugging Face cache layout: ``models--owner--name/snapshots/<rev>/<filename>`` + ``refs/main``."""
    rev = "0123456789abcdef0123456789abcdef01234567"
    root = cache / ("models--" + repo.replace("/", "--"))
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(rev)
    path = root / "snapshots" / rev / filename
    path.parent.mkdir(parents=True)
    write(path)
    return str(path)


def fake_backbone(name: str = "test-b32", hf_file: str = "ckpt/test-ViT-B-32.pt") -> Backbone:
    """A named backbone on the Hub whose published file fits ``tiny-b32``."""
    return Backbone(
        name, "Test ViT-B/32", "Test", "tiny-b32", None, "test-owner/test-clip", hf_file,
        "https://example.org/test-clip", "test-ViT-B-32.pt", True, False, "tiny-b32",
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------- registry
@pytest.mark.parametrize("name", list(BACKBONES))
def test_registry_entry_arch_patch_and_stand_in(name):
    b = BACKBONES[name]
    assert b.name == name == name.lower() and list_backbones().index(name) >= 0
    assert b.arch in open_clip.list_models()
    assert config_patch(b.arch) == b.patch_size
    assert config_patch(b.stand_in) == b.patch_size
    if b.tag is not None:  # an open_clip tag of that very architecture
        assert b.tag in open_clip.list_pretrained_tags_by_model(b.arch)
        assert b.hf_repo is None and not b.remote_sensing
    else:
        assert b.remote_sensing and b.file_hint


def test_registry_patch_sizes_and_jbu():
    patches = {b.name: b.patch_size for b in BACKBONES.values()}
    assert patches["clip-b16"] == 16 and patches["remoteclip-b32"] == 32 and patches["georsclip-l14"] == 14
    assert [b.name for b in BACKBONES.values() if b.jbu] == ["clip-b16"]


def test_resolve_backbone_is_case_insensitive_and_none_for_open_clip_names():
    assert resolve_backbone("RemoteCLIP-B32") is BACKBONES["remoteclip-b32"]
    assert resolve_backbone("CLIP-B16") is BACKBONES["clip-b16"]
    for name in ("ViT-B-16", "ViT-B-32", "tiny", "tiny-b32", "model.json"):
        assert resolve_backbone(name) is None


# ---------------------------------------------------------------------------------------------------- weights
def test_default_weights_of_tagged_backbones_are_their_tags():
    assert backbone_weights(BACKBONES["clip-b16"], "default") == "openai"
    assert backbone_weights(BACKBONES["clip-l14"], "default") == "openai"
    assert backbone_weights(BACKBONES["metaclip-b16"], "default") == "metaclip_fullcc"


@pytest.mark.parametrize("name", [n for n, b in BACKBONES.items() if b.hf_repo is not None])
def test_hf_published_weights_missing_from_an_empty_cache(name, hf_cache):
    b = BACKBONES[name]
    with pytest.raises(WeightsNotFoundError) as err:
        backbone_weights(b, "default")
    msg = str(err.value)
    assert "\n" not in msg
    assert b.hf_repo in msg and b.hf_file in msg and b.label in msg
    assert "download" in msg and "~/.cache/huggingface" in msg  # fix 1: fill the cache on a machine with internet
    command = re.search(r"`([^`]+)`", msg).group(1).split()[0]  # a command the installed huggingface_hub provides
    scripts = {e.name for e in importlib.metadata.distribution("huggingface_hub").entry_points}
    assert command in scripts | {"python"}, f"{command} is not installed by huggingface_hub (it has {sorted(scripts)})"
    assert f"--pretrained /path/to/{b.file_hint}" in msg  # fix 2: pass the file


@pytest.mark.parametrize("name", ["skyclip-b32", "skyclip-l14"])
def test_skyclip_weights_are_a_file_only(name, hf_cache):
    b = BACKBONES[name]
    with pytest.raises(WeightsNotFoundError) as err:
        backbone_weights(b, "default")
    msg = str(err.value)
    assert "\n" not in msg
    assert "https://github.com/wangzhecheng/SkyScript" in msg and "release" in msg
    assert b.file_hint.split("/")[0] in msg  # the release's folder (SkyCLIP_ViT_B32_top50pct, ...)
    assert f"--pretrained /path/to/{b.file_hint}" in msg


@pytest.mark.parametrize("pretrained", ["/data/RemoteCLIP-ViT-B-32.pt", "openai", "none", "laion2b_s34b_b79k"])
@pytest.mark.parametrize("name", ["remoteclip-b32", "skyclip-l14", "clip-b16"])
def test_paths_tags_and_none_pass_through(name, pretrained, hf_cache):
    assert backbone_weights(BACKBONES[name], pretrained) == pretrained


def test_a_cached_published_file_is_found(hf_cache):
    b = BACKBONES["georsclip-b32"]  # a file in a folder of the repository (ckpt/RS5M_ViT-B-32.pt)
    path = put_in_cache(hf_cache, b.hf_repo, b.hf_file, lambda p: p.write_bytes(b"weights"))
    assert backbone_weights(b, "default") == path
    with pytest.raises(WeightsNotFoundError, match="RS5M_ViT-L-14.pt"):  # the other file of the repo is not there
        backbone_weights(BACKBONES["georsclip-l14"], "default")


# ---------------------------------------------------------------------------------------------------- create_clip
@pytest.fixture(scope="module")
def tiny_b32_state() -> dict[str, torch.Tensor]:
    """tiny-b32's state dict, shifted so that loading it is told apart from the seeded random initialisation."""
    state = create_clip("tiny-b32", "none").model.state_dict()
    return {k: (v + 0.5 if v.is_floating_point() else v) for k, v in state.items()}


def assert_loaded(bundle, state) -> None:
    loaded = bundle.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in state.items() if k in loaded)


def test_named_backbone_loads_its_published_state_dict(hf_cache, monkeypatch, tiny_b32_state):
    b = fake_backbone()
    monkeypatch.setitem(BACKBONES, b.name, b)
    path = put_in_cache(hf_cache, b.hf_repo, b.hf_file, lambda p: torch.save(tiny_b32_state, p))
    bundle = create_clip("Test-B32", "default")  # case-insensitive, as resolve_backbone
    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()
    assert bundle.weights_id == f"sha256:{digest}" and bundle.pretrained == path
    assert (bundle.name, bundle.patch_size, bundle.activation) == ("tiny-b32", 32, "gelu")
    assert_loaded(bundle, tiny_b32_state)


def test_named_backbone_loads_an_open_clip_training_checkpoint(hf_cache, monkeypatch, tiny_b32_state):
    b = fake_backbone(hf_file="SkyCLIP_ViT_B32_top50pct/epoch_20.pt")  # as SkyCLIP's release
    monkeypatch.setitem(BACKBONES, b.name, b)
    ckpt = {"epoch": 20, "name": "test", "state_dict": {"module." + k: v for k, v in tiny_b32_state.items()}}
    put_in_cache(hf_cache, b.hf_repo, b.hf_file, lambda p: torch.save(ckpt, p))
    bundle = create_clip(b.name, "default")
    assert bundle.weights_id.startswith("sha256:") and len(bundle.weights_id) == 7 + 64
    assert bundle.patch_size == 32
    assert_loaded(bundle, tiny_b32_state)


def test_named_backbone_refuses_a_state_dict_of_another_architecture(hf_cache, monkeypatch):
    b = fake_backbone()
    monkeypatch.setitem(BACKBONES, b.name, b)
    other = create_clip("tiny-l14", "none").model.state_dict()
    path = put_in_cache(hf_cache, b.hf_repo, b.hf_file, lambda p: torch.save(other, p))
    with pytest.raises(CheckpointError) as err:
        create_clip(b.name, "default")
    msg = str(err.value)
    assert "\n" not in msg and path in msg and "tiny-b32" in msg and "--backbone" in msg


def test_open_clip_name_default_is_openai_with_quickgelu():
    bundle = create_clip("ViT-B-16", "default", load_weights=False)
    assert (bundle.pretrained, bundle.activation, bundle.weights_id) == ("openai", "quick_gelu", "random")
    assert built_activation(bundle.model) == {"visual": "quick_gelu", "text": "quick_gelu"}


def test_remoteclip_architecture_without_looking_for_files(hf_cache):
    bundle = create_clip("remoteclip-b32", "default", load_weights=False)  # the cache is empty: no file is read
    assert (bundle.name, bundle.patch_size, bundle.activation, bundle.weights_id) == ("ViT-B-32", 32, "gelu", "random")
    assert built_activation(bundle.model) == {"visual": "gelu", "text": "gelu"}


def test_tiny_has_no_default_weights():
    with pytest.raises(ConfigError, match="tiny has no default weights"):
        create_clip("tiny", "default")


# ---------------------------------------------------------------------------------------------------- build_config
def test_backbone_without_jbu_runs_without_upsampler_and_says_so(caplog):
    with caplog.at_level(logging.WARNING, logger="alignclip.pipeline.config"):
        config = build_config("alignclip-d", "potsdam", backbone="remoteclip-b32")
    assert config.upsampler == "none" and config.backbone == "remoteclip-b32"
    assert "RemoteCLIP ViT-B/32" in caplog.text and "upsampler=none" in caplog.text


@pytest.mark.parametrize("explicit", [dict(upsampler_ckpt="/x.ckpt"), dict(upsampler="jbu_one")])
def test_an_explicit_upsampler_is_kept(explicit, caplog):
    with caplog.at_level(logging.WARNING, logger="alignclip.pipeline.config"):
        config = build_config("alignclip-d", "potsdam", backbone="remoteclip-b32", **explicit)
    assert config.upsampler == "jbu_one" and "RemoteCLIP" not in caplog.text
    assert config.upsampler_ckpt == explicit.get("upsampler_ckpt")


@pytest.mark.parametrize("backbone", ["clip-b16", "ViT-B-32"])  # the JBU backbone; an open_clip name is as given
def test_other_backbones_keep_the_upsampler(backbone, caplog):
    with caplog.at_level(logging.WARNING, logger="alignclip.pipeline.config"):
        assert build_config("alignclip-d", "potsdam", backbone=backbone).upsampler == "jbu_one"
    assert "upsampler=none" not in caplog.text


def test_pretrained_default_is_default():
    assert SegmentorConfig().pretrained == "default"
    assert build_config("alignclip-d").pretrained == "default"
    assert build_config("alignclip-d", backbone="georsclip-l14").pretrained == "default"


# ---------------------------------------------------------------------------------------------------- vfm_input_size
WINDOWS = [(224, 224), (160, 224), (154, 98)]


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("vfm_patch", [8, 14, 16])
@pytest.mark.parametrize("clip_patch", [14, 16, 32])
def test_vfm_input_size_any_pair_of_patch_sizes(clip_patch, vfm_patch, window):
    padded = tuple(math.ceil(s / clip_patch) * clip_patch for s in window)  # as the segmentor pads the window
    grid = tuple(s // clip_patch for s in padded)
    own = vfm_input_size(padded, grid, vfm_patch, "vfm")
    assert all(s % vfm_patch == 0 and abs(s - p) <= vfm_patch / 2 for s, p in zip(own, padded, strict=True))
    assert vfm_input_size(padded, grid, vfm_patch, "clip") == (grid[0] * vfm_patch, grid[1] * vfm_patch)
    assert vfm_input_size(padded, grid, vfm_patch, "vfm", "native", 1024) == (1024, 1024)
    assert vfm_input_size(padded, grid, vfm_patch, "clip", "native", 1024) == (grid[0] * vfm_patch, grid[1] * vfm_patch)
    assert vfm_input_size(padded, grid, vfm_patch, "vfm", "native", None) == own  # DINO: no native size


@pytest.mark.parametrize(
    ("side", "patch", "expected"),
    [
        (224, 8, 224), (224, 14, 224), (224, 16, 224), (224, 32, 224),  # 28, 16, 14, 7 patches exactly
        (160, 14, 154),  # 11.43 patches -> 11
        (160, 8, 160), (160, 16, 160), (160, 32, 160),
        (154, 14, 154), (154, 8, 152), (154, 16, 160), (154, 32, 160),  # 19.25 -> 19, 9.625 -> 10, 4.81 -> 5
        (98, 14, 98), (98, 8, 96), (98, 16, 96), (98, 32, 96),  # 12.25 -> 12, 6.125 -> 6, 3.06 -> 3
        (7, 16, 16),  # at least one patch
    ],
)  # fmt: skip
def test_vfm_input_size_rounds_to_the_nearest_multiple(side, patch, expected):
    assert vfm_input_size((side, side), (1, 1), patch) == (expected, expected)


def test_vfm_input_size_clip_grid_examples():
    assert vfm_input_size((224, 224), (7, 7), 14, "clip") == (98, 98)  # CLIP B/32's grid for DINOv2 B/14
    assert vfm_input_size((224, 224), (7, 7), 8, "clip") == (56, 56)  # ... for DINO B/8
    assert vfm_input_size((224, 224), (16, 16), 16, "clip") == (256, 256)  # CLIP L/14's grid for DINO B/16
    assert vfm_input_size((160, 224), (10, 14), 14, "clip") == (140, 196)
    with pytest.raises(ConfigError, match="positive number of pixels"):
        vfm_input_size((224, 224), (14, 14), 0)


# ---------------------------------------------------------------------------------------------------- tiny DINOv2
@pytest.mark.parametrize(("hw", "grid"), [((224, 224), (16, 16)), ((154, 98), (11, 7))])
def test_tiny_dinov2_stand_in(hw, grid):
    vfm = create_vfm("tiny_dinov2_b14", "none")
    assert (vfm.family, vfm.patch_size, vfm.num_prefix_tokens, vfm.pos_embed) == ("vit", 14, 5, "timm")
    assert vfm.model.reg_token.shape[1] == 4 and vfm.model.no_embed_class
    assert float(vfm.model.blocks[0].ls1.gamma.mean()) == 1.0  # LayerScale is there
    feats, attn = vfm(torch.randn(2, 3, *hw))
    n = grid[0] * grid[1]
    assert feats.shape == (2, *grid, vfm.embed_dim) and attn.shape == (2, n, n)
    assert bool(((attn >= 0) & (attn <= 1)).all()) and bool((attn.sum(-1) < 1).all())  # prefix columns dropped


# ---------------------------------------------------------------------------------------------------- tiny_stand_in
@pytest.mark.parametrize(
    ("vfm", "stand_in"),
    [
        ("dino_vitb8", "tiny_dino_b8"),
        ("dino_vitb16", "tiny_dino_b16"),
        ("sam_vitb", "tiny_sam"),
        ("dinov2_vitb14_reg", "tiny_dinov2_b14"),
        ("dinov2_vits14_reg", "tiny_dinov2_b14"),
        ("vit_base_patch14_reg4_dinov2.lvd142m", "tiny_dinov2_b14"),
        ("tiny_dino_b8", "tiny_dino_b8"),
    ],
)
def test_tiny_stand_in(vfm, stand_in):
    assert tiny_stand_in(vfm) == stand_in


@pytest.mark.parametrize("name", sorted(n for n, s in VFM_SPECS.items() if s.timm_tag is not None))
def test_tiny_stand_in_has_the_patch_size(name):
    patch = int(re.search(r"patch(\d+)", VFM_SPECS[name].timm_tag).group(1))
    assert create_vfm(tiny_stand_in(name), "none").patch_size == patch


# ---------------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (150, 460, 3), dtype=np.uint8)


def segment_recording_cce(segmentor: Segmentor, image: np.ndarray) -> tuple[np.ndarray, list]:
    """Labels of ``image`` and, per window batch, the grids (CLIP's S', CCE's refined Ŝ) of the ``cce`` stage."""
    grids = []

    def wrap(stage, fn):
        if stage != "cce":
            return fn

        def cce(x, s_patch):
            refined = fn(x, s_patch)
            grids.append((tuple(s_patch.shape[-2:]), tuple(refined.shape[-2:])))
            return refined

        return cce

    with segmentor.instrumented(wrap):
        labels = segmentor.segment(image)
    return labels, grids


@pytest.mark.parametrize("grid_align", ["vfm", "clip"])
@pytest.mark.parametrize("vfm", ["tiny", "tiny_dino_b8", "tiny_dinov2_b14"])
@pytest.mark.parametrize("backbone", ["tiny", "tiny-b32", "tiny-l14"])
def test_segment_any_clip_and_vfm_patch_sizes(backbone, vfm, grid_align, image):
    config = build_config(
        "alignclip-d", smoke=True, backbone=backbone, upsampler="none", vfm=vfm, grid_align=grid_align
    )
    segmentor = Segmentor(config, CLASSES)
    assert segmentor.clip.patch_size == config_patch(backbone)
    labels, grids = segment_recording_cce(segmentor, image)
    assert labels.shape == (150, 460) and labels.min() >= 0 and labels.max() < len(CLASSES)
    assert np.array_equal(labels, segmentor.segment(image))
    assert grids  # CCE ran on every window batch
    vfm_patch = segmentor.vfm.patch_size
    for clip_grid, refined in grids:
        if grid_align == "clip":
            assert refined == clip_grid
        else:  # the VFM's own grid of the (CLIP-padded) window
            padded = tuple(g * segmentor.clip.patch_size for g in clip_grid)
            assert refined == tuple(s // vfm_patch for s in vfm_input_size(padded, clip_grid, vfm_patch))


@pytest.mark.parametrize("preset", ["segearth-ov", "segearth-ov+sga", "segearth-ov+cce"])
def test_segearth_ov_presets_on_a_patch_32_clip(preset, image):
    config = build_config(preset, smoke=True, backbone="tiny-b32", upsampler="none")
    segmentor = Segmentor(config, CLASSES)
    labels = segmentor.segment(image[:100, :300])
    assert labels.shape == (100, 300) and labels.min() >= 0 and labels.max() < len(CLASSES)
    assert np.array_equal(labels, segmentor.segment(image[:100, :300]))


def test_a_file_that_is_not_tensors_is_refused_in_one_line(tmp_path):
    bad = tmp_path / "RemoteCLIP-ViT-B-32.pt"
    bad.write_bytes(b"\x80\x04not a checkpoint at all" * 40)
    with pytest.raises(CheckpointError) as err:
        create_clip("tiny-b32", str(bad))
    assert "\n" not in str(err.value) and "weights_only=True" in str(err.value) and "torch.save" in str(err.value)
