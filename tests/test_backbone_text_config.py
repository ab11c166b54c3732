import json

import pytest
import torch

from alignclip.errors import ConfigError, InputError, WeightsNotFoundError
from alignclip.models.clip import create_clip, dense_features, resample_pos_embed
from alignclip.models.text import build_text_embeddings, parse_classes
from alignclip.pipeline.config import PRESETS, TABLE6, SegmentorConfig, build_config, parse_preset


@pytest.fixture(scope="module")
def tiny():
    return create_clip("tiny", "none")


def test_tiny_is_deterministic_and_small(tiny):
    again = create_clip("tiny", "none")
    for a, b in zip(tiny.model.state_dict().values(), again.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    n_bytes = sum(p.numel() * p.element_size() for p in tiny.model.parameters())
    assert n_bytes < 20e6
    assert tiny.weights_id == "random" and tiny.is_random


def test_vanilla_without_drop_matches_open_clip(tiny):
    visual = tiny.model.visual
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    patch, cls = dense_features(visual, x, "vanilla", drop_residual=False)
    visual.output_tokens = True
    try:
        pooled, tokens = visual(x)
    finally:
        visual.output_tokens = False
    torch.testing.assert_close(cls, pooled, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(patch.flatten(2).transpose(1, 2), tokens @ visual.proj, atol=1e-5, rtol=1e-5)


def test_segearth_last_block_is_out_proj_of_eq2(tiny):
    """Dropping residual/FFN: output = proj(ln_post(out_proj(Eq. 2)))."""
    visual = tiny.model.visual
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    patch, cls = dense_features(visual, x, "segearth")
    # recompute by hand from the open_clip modules
    tokens = visual._embeds(x)
    for blk in visual.transformer.resblocks[:-1]:
        tokens = blk(tokens)
    last = visual.transformer.resblocks[-1]
    q, k, v = torch.nn.functional.linear(last.ln_1(tokens), last.attn.in_proj_weight, last.attn.in_proj_bias).chunk(
        3, dim=-1
    )
    heads = last.attn.num_heads

    def split(t):
        return t.view(1, -1, heads, t.shape[-1] // heads).transpose(1, 2)

    q, k, v = split(q), split(k), split(v)
    s = q.shape[-1] ** -0.5
    w = sum(torch.softmax(a @ a.transpose(-1, -2) * s, -1) for a in (q, k, v))
    o = (w @ v).transpose(1, 2).reshape(1, -1, heads * q.shape[-1])
    out = visual.ln_post(last.attn.out_proj(o)) @ visual.proj
    torch.testing.assert_close(cls, out[:, 0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(patch.flatten(2).transpose(1, 2), out[:, 1:], atol=1e-5, rtol=1e-4)


def test_non_native_size_interpolates_pos_embed(tiny):
    patch, cls = dense_features(tiny.model.visual, torch.randn(1, 3, 112, 320))
    assert patch.shape == (1, tiny.embed_dim, 7, 20) and cls.shape == (1, tiny.embed_dim)
    pe = torch.randn(1 + 16, 8)
    assert resample_pos_embed(pe, (4, 4)) is pe
    out = resample_pos_embed(pe, (2, 6))
    assert out.shape == (13, 8) and torch.equal(out[0], pe[0])


def test_model_config_json_and_local_state_dict(tmp_path, tiny):
    cfg = json.loads(
        (__import__("alignclip.models.clip", fromlist=["CONFIG_DIR"]).CONFIG_DIR / "tiny.json").read_text()
    )
    cfg_path = tmp_path / "mytiny.json"
    cfg_path.write_text(json.dumps(cfg))
    weights = tmp_path / "weights.pt"
    torch.save(tiny.model.state_dict(), weights)
    bundle = create_clip(str(cfg_path), str(weights))
    assert bundle.name == "mytiny" and bundle.weights_id.startswith("sha256:")
    for a, b in zip(tiny.model.state_dict().values(), bundle.model.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_backbone_errors(tmp_path):
    with pytest.raises(ConfigError, match="unknown CLIP backbone"):
        create_clip("ViT-Nope", "none")
    with pytest.raises(ConfigError, match="valid tags"):
        create_clip("tiny", "openai")
    with pytest.raises(WeightsNotFoundError, match="not found"):
        create_clip("tiny", str(tmp_path / "missing.pt"))


def test_offline_missing_openai_weights_message():
    with pytest.raises(WeightsNotFoundError, match="--pretrained") as err:
        create_clip("ViT-B-16", "openai")
    assert "\n" not in str(err.value)


def test_parse_classes():
    q = parse_classes(["background", "tree, forest", "road"])
    assert q.queries == ("background", "tree", "forest", "road")
    assert q.query_to_class == (0, 1, 1, 2)
    for bad, match in [
        ([], "no class names"),
        (["a", ""], "empty"),
        (["a,", "b"], "empty"),
        (["road", "Road"], "duplicate"),
        (["tree,forest", "forest"], "duplicate"),
    ]:
        with pytest.raises(InputError, match=match):
            parse_classes(bad)


def test_text_embeddings_are_template_means(tiny):
    templates = ["a photo of {}.", "an image of {}."]
    emb = build_text_embeddings(tiny.model, tiny.tokenizer, ["road", "tree"], templates)
    assert emb.shape == (2, tiny.embed_dim)
    torch.testing.assert_close(emb.norm(dim=-1), torch.ones(2))
    with torch.no_grad():
        single = torch.nn.functional.normalize(
            tiny.model.encode_text(tiny.tokenizer(["a photo of road.", "an image of road."])), dim=-1
        )
    torch.testing.assert_close(emb[0], torch.nn.functional.normalize(single.mean(0), dim=0), atol=1e-6, rtol=1e-5)


def test_presets_and_switches():
    assert set(PRESETS) >= {
        "clip",
        "maskclip",
        "sclip",
        "clearclip",
        "naclip",
        "segearth-ov",
        "alignclip-d",
        "alignclip-s",
    }
    base, over = parse_preset("segearth-ov+sga")
    assert base == "segearth-ov" and over["sga"] and not over["cce"]
    cfg = build_config("segearth-ov+cce", smoke=True)
    assert cfg.cce and not cfg.sga and cfg.backbone == "tiny"
    assert build_config("alignclip-s").vfm == "sam_vitb"
    assert build_config("alignclip-s").vfm_resolution == "window"  # SAM sees each window at its own size
    smoke_s = build_config("alignclip-s", smoke=True, vfm_resolution="native")
    assert smoke_s.vfm == "tiny_sam" and smoke_s.vfm_resolution == "native"
    assert build_config("alignclip-d", smoke=True).replace(vfm_resolution="native").vfm_resolution == "native"
    with pytest.raises(ConfigError, match="alignclip-d"):
        build_config("nope")
    with pytest.raises(ConfigError, match="valid switches"):
        build_config("segearth-ov+crf")
    with pytest.raises(ConfigError, match="unknown config field"):
        build_config("alignclip-d", alfa=0.2)


@pytest.mark.parametrize(
    "field,value",
    [
        ("alpha", 1.2),
        ("beta", -0.1),
        ("alpha", -0.01),
        ("n_clusters", 0),
        ("attention", "bogus"),
        ("upsampler", "bilinear"),
        ("vfm_resolution", "1024"),
        ("grid_align", "sam"),
    ],
)
def test_config_validation(field, value):
    with pytest.raises(ConfigError, match=field):
        SegmentorConfig(**{field: value})


def test_table6_matches_paper_csv(fixtures_dir):
    import csv

    path = fixtures_dir.parent / "paper" / "tables" / "table6_hyperparameters.csv"
    rows = list(csv.DictReader(path.open()))
    for row in rows:
        variant = row.pop("variant").lower()
        hp = row.pop("hyperparameter")
        for ds, v in row.items():
            assert TABLE6[variant][hp][ds.lower()] == float(v)


def test_truncated_text_encoding_is_exact(tiny):
    from alignclip.models.text import encode_text

    tokens = tiny.tokenizer(["a satellite image of a road.", "tree", "an aerial photo of many small buildings."])
    with torch.no_grad():
        full = tiny.model.encode_text(tokens)
        fast = encode_text(tiny.model, tokens)
    torch.testing.assert_close(fast, full, atol=1e-5, rtol=1e-5)
