"""VFMs beyond the fixed list: timm model names, JSON architecture files, DINO's position-embedding resampling."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from alignclip.errors import ConfigError
from alignclip.models.vfm import create_vfm, dino_pos_embed
from alignclip.models.vfm_builders import VFM_SPECS, resolve_vfm


def test_named_dino_and_dinov2_tags():
    assert VFM_SPECS["dino_vits8"].timm_tag == "vit_small_patch8_224.dino"
    assert VFM_SPECS["dinov2_vitb14_reg"].timm_tag == "vit_base_patch14_reg4_dinov2.lvd142m"


@pytest.mark.parametrize(("name", "patch"), [("tiny_dino_b8", 8), ("tiny_dino_b16", 16)])
def test_packaged_architecture_files(name, patch):
    vfm = create_vfm(name, "none")
    assert (vfm.patch_size, vfm.embed_dim, len(vfm.model.blocks), vfm.num_heads) == (patch, 128, 12, 2)
    assert vfm.pos_embed == "dino" and vfm.family == "vit"
    feats, attn = vfm(torch.randn(1, 3, 224, 224))
    g = 224 // patch
    assert feats.shape == (1, g, g, 128) and attn.shape == (1, g * g, g * g)


def test_architecture_file_of_any_patch_size(tmp_path):
    path = tmp_path / "vit_p4.json"
    path.write_text(
        json.dumps({"family": "vit", "args": {"patch_size": 4, "embed_dim": 32, "depth": 1, "num_heads": 2}})
    )
    vfm = create_vfm(str(path), "none")
    assert vfm.patch_size == 4
    assert vfm(torch.randn(1, 3, 32, 48))[0].shape == (1, 8, 12, 32)


def test_bad_architecture_files_are_one_line(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not readable JSON"):
        resolve_vfm(str(bad))
    bad.write_text(json.dumps({"family": "cnn"}))
    with pytest.raises(ConfigError, match='"family" must be vit or sam'):
        resolve_vfm(str(bad))
    bad.write_text(json.dumps({"args": {"patch_size": 8, "no_such_argument": 1}}))
    with pytest.raises(ConfigError, match="do not fit timm VisionTransformer"):
        create_vfm(str(bad), "none")
    with pytest.raises(ConfigError, match="not found"):
        resolve_vfm(str(tmp_path / "missing.json"))


def test_timm_model_name_is_a_vfm():
    vfm = create_vfm("vit_small_patch16_224", "none")
    assert (vfm.family, vfm.patch_size, vfm.embed_dim) == ("vit", 16, 384)
    with pytest.raises(ConfigError, match="not a ViT or SAM"):
        create_vfm("resnet18", "none")


def test_unknown_vfm_lists_the_ways_to_name_one():
    with pytest.raises(ConfigError, match="timm model name") as err:
        resolve_vfm("dinov9")
    assert "\n" not in str(err.value) and "tiny_dino_b8" in str(err.value)


def test_dino_pos_embed_is_dinos_bicubic_with_the_tenth():
    side, dim = 4, 3
    pos = torch.randn(1, 1 + side * side, dim)
    assert dino_pos_embed(pos, (side, side)) is pos  # the trained grid: unchanged
    out = dino_pos_embed(pos, (6, 6))
    grid = pos[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2)
    expected = F.interpolate(grid, scale_factor=(6.1 / side, 6.1 / side), mode="bicubic")
    assert torch.equal(out[:, 0], pos[:, 0])
    assert torch.allclose(out[:, 1:], expected.permute(0, 2, 3, 1).reshape(1, 36, dim))
    # timm's resampling (exact size, antialiased kernel) samples other positions
    timm_like = F.interpolate(grid, size=(6, 6), mode="bicubic", antialias=True).permute(0, 2, 3, 1).reshape(1, 36, dim)
    assert not torch.allclose(out[:, 1:], timm_like)
    # a non-square grid (rows, cols) = (5, 7): rows scaled by 5.1 / n, columns by 7.1 / n (DINO's `w` is the rows)
    wide = dino_pos_embed(pos, (5, 7))
    expected = F.interpolate(grid, scale_factor=(5.1 / side, 7.1 / side), mode="bicubic")
    assert torch.allclose(wide[:, 1:], expected.permute(0, 2, 3, 1).reshape(1, 35, dim))


def test_dino_mode_changes_only_off_grid_inputs():
    vfm = create_vfm("tiny_dino_b16", "none")
    x224, x320 = torch.randn(1, 3, 224, 224), torch.randn(1, 3, 320, 320)
    a224, a320 = vfm(x224)[0], vfm(x320)[0]
    feats, _ = vfm(torch.randn(1, 3, 224, 320))  # a non-square grid: 14 rows, 20 columns
    assert feats.shape[1:3] == (14, 20)
    vfm.pos_embed = "timm"
    assert torch.equal(vfm(x224)[0], a224)
    assert not torch.allclose(vfm(x320)[0], a320)
