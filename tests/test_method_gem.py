"""GEM (alignclip.methods.gem, alignclip.ops.gem): the self-self attention on hand-checkable cases, the preset end to
end on the tiny models, bad inputs, and parity with the authors' code (WalBouss/GEM, commit 5fa677c) run on the shared
tiny random weights (tests/data/parity/gem/README.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from parity import assert_parity, check_weights, load_golden, processed_image, settings

from alignclip.errors import ConfigError
from alignclip.methods.base import EncoderContext
from alignclip.methods.gem import encode
from alignclip.models.clip import create_clip, dense_features
from alignclip.ops.gem import (
    adaptive_inverse_temperature,
    gem_attention,
    resample_pos_embed_antialias,
    self_self_weights,
)
from alignclip.pipeline.config import build_config
from alignclip.pipeline.segmentor import Segmentor

CLASSES = ["background", "building,roof", "road", "water"]
LN3 = math.log(3.0)  # softmax over two tokens of (1, 0) · ln 3 gives (3/4, 1/4)


def _image(h=96, w=128, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _t(rows) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64)[None, None]  # [1, 1, L, d]


# q, k, v of two tokens: v orthogonal (norms 1 and 2), k parallel, q opposite
V = _t([[1.0, 0.0], [0.0, 2.0]])
K = _t([[1.0, 0.0], [3.0, 0.0]])
Q = _t([[1.0, 0.0], [-1.0, 0.0]])
# their weights at 1/τ = ln 3: v-v (3/4, 1/4); k-k uniform; q-q softmax(±ln 3) = (9/10, 1/10)
W_V = [[0.75, 0.25], [0.25, 0.75]]
W_K = [[0.5, 0.5], [0.5, 0.5]]
W_Q = [[0.9, 0.1], [0.1, 0.9]]


# ---------------------------------------------------------------- ops on hand-checkable cases
def test_adaptive_inverse_temperature_is_the_mean_token_norm_over_sqrt_d():
    tokens = torch.tensor([[[3.0, 4.0], [0.0, 3.0]], [[0.0, 1.0], [1.0, 0.0]]])  # norms (5, 3) and (1, 1)
    out = adaptive_inverse_temperature(tokens, head_dim=4)  # mean / 2
    assert out.shape == (2, 1, 1, 1)
    torch.testing.assert_close(out.flatten(), torch.tensor([2.0, 0.5]))


def test_self_self_weights_normalise_tokens_first():
    for x, expected in ((V, W_V), (K, W_K), (Q, W_Q)):
        torch.testing.assert_close(self_self_weights(x, LN3)[0, 0], torch.tensor(expected, dtype=torch.float64))


def test_ensemble_without_iterations_averages_the_three_weights_applied_to_v():
    # W_v v = [[.75, .5], [.25, 1.5]]; W_k v = [[.5, 1], [.5, 1]]; W_q v = [[.9, .2], [.1, 1.8]]
    expected = torch.tensor([[2.15, 1.7], [0.85, 4.3]], dtype=torch.float64) / 3
    torch.testing.assert_close(gem_attention(Q, K, V, LN3, iters=0)[0, 0], expected)


def test_one_iteration_refines_each_projection_before_the_assignment_to_v():
    # v: N(v) = I, x1 = W_v I = W_v, whose rows have cosine 0.375 / 0.625 = 0.6 -> weights (w, 1 - w),
    # w = 1 / (1 + 3^-0.4); k stays parallel (uniform weights) and q opposite (weights W_q): unchanged
    w = 1.0 / (1.0 + 3.0**-0.4)
    w_v = torch.tensor([[w, 1 - w], [1 - w, w]], dtype=torch.float64)
    expected = (w_v @ V[0, 0] + torch.tensor(W_K, dtype=torch.float64) @ V[0, 0]) / 3 + torch.tensor(
        [[0.9, 0.2], [0.1, 1.8]], dtype=torch.float64
    ) / 3
    torch.testing.assert_close(gem_attention(Q, K, V, LN3, iters=1)[0, 0], expected)


def test_inverse_temperature_is_per_image():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64) for _ in range(3))
    temps = torch.tensor([0.5, 4.0], dtype=torch.float64).view(2, 1, 1, 1)
    both = gem_attention(q, k, v, temps, iters=2)
    for i, t in enumerate((0.5, 4.0)):
        torch.testing.assert_close(both[i], gem_attention(q[i : i + 1], k[i : i + 1], v[i : i + 1], t, iters=2)[0])


def test_antialiased_position_embedding_resampling():
    pos = torch.randn(1 + 4, 3)  # a 2x2 grid
    assert resample_pos_embed_antialias(pos, (2, 2)) is pos
    const = torch.cat([torch.zeros(1, 3), torch.full((4, 3), 2.5)])
    out = resample_pos_embed_antialias(const, (3, 5))
    assert out.shape == (16, 3)
    torch.testing.assert_close(out, torch.cat([torch.zeros(1, 3), torch.full((15, 3), 2.5)]))  # prefix kept


# ---------------------------------------------------------------- the encoder on the tiny model
def _ctx(**over) -> EncoderContext:
    config = build_config("gem", backbone="tiny-b16", pretrained="none", device="cpu", **over)
    return EncoderContext(create_clip("tiny-b16", "none"), None, config, None)


def test_original_path_is_clips_unmodified_tower():
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    ctx = _ctx(gem_sga_source="original", gem_cls_source="original", gem_pos_embed="shared")
    patch, cls, sga_src = encode(ctx, x)
    ref_patch, ref_cls = dense_features(ctx.clip.model.visual, x, "vanilla", drop_residual=False)
    torch.testing.assert_close(sga_src, ref_patch, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(cls, ref_cls, rtol=1e-4, atol=1e-5)
    assert patch.shape == ref_patch.shape and not torch.allclose(patch, ref_patch, atol=1e-2)  # the GEM path
    assert encode(_ctx(), x)[2] is None  # default: SGA on the returned (GEM) patch features


def test_preset_is_the_table2_protocol_and_sga_plugs_in_at_alpha_01():
    config = build_config("gem", smoke=True)
    assert (config.encoder, config.templates, config.crop, config.stride) == ("gem", "openai", 224, 112)
    assert not (config.sga or config.cce) and config.upsampler == "none" and config.cls_token_lambda == 0.0
    with_sga = build_config("gem+sga", smoke=True)
    assert with_sga.sga and with_sga.alpha == 0.1
    image = _image()
    out = {}
    for name, over in {
        "gem": {},
        "gem+sga": {},
        "gem+sga+cce": {},
        "gem+sga-original": {"gem_sga_source": "original"},
    }.items():
        seg = Segmentor(build_config(name.split("-")[0], smoke=True, long_side=None, **over), CLASSES)
        pred = seg.predict(image)
        assert pred.labels.shape == image.shape[:2] and torch.isfinite(pred.logits).all()
        out[name] = pred.logits
    assert not torch.allclose(out["gem"], out["gem+sga"])
    assert not torch.allclose(out["gem+sga"], out["gem+sga-original"])  # the third output reaches SGA


@pytest.mark.parametrize("over", [{}, {"gem_sga_source": "original", "gem_cls_source": "original"}])
def test_encoder_makes_no_host_reads(over, monkeypatch):
    ctx = _ctx(gem_iters=2, **over)
    x = torch.randn(2, 3, 48, 80, generator=torch.Generator().manual_seed(2))

    def forbid(name):
        def method(self, *args, **kwargs):
            raise AssertionError(f"Tensor.{name} read a tensor to the host inside the GEM encoder")

        return method

    for name in ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__"):
        monkeypatch.setattr(torch.Tensor, name, forbid(name))
    encode(ctx, x)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"gem_layers": 0}, "gem_layers=0 must be an int >= 1"),
        ({"gem_iters": -1}, "gem_iters=-1 must be an int >= 0"),
        ({"gem_inv_temp": 0.0}, "gem_inv_temp=0.0 must be a finite number > 0"),
        ({"gem_inv_temp": float("nan")}, "gem_inv_temp=nan"),
        ({"gem_sga_source": "patch"}, "gem_sga_source='patch' is not valid; choose one of gem, original"),
        ({"gem_cls_source": "vv"}, "gem_cls_source='vv' is not valid"),
        ({"gem_pos_embed": "size"}, "gem_pos_embed='size' is not valid; choose one of authors, shared"),
        ({"gem_layers": 2.5}, "gem_layers=2.5 is a float"),
    ],
)
def test_bad_fields_give_one_line_config_errors(overrides, match):
    with pytest.raises(ConfigError, match=match.replace("(", r"\(").replace("+", r"\+")) as err:
        build_config("gem", smoke=True, **overrides)
    assert "\n" not in str(err.value)


def test_more_gem_layers_than_blocks_means_all_blocks():
    x = torch.randn(1, 3, 32, 48, generator=torch.Generator().manual_seed(1))
    all_blocks = encode(_ctx(gem_layers=12), x)[0]
    torch.testing.assert_close(encode(_ctx(gem_layers=99), x)[0], all_blocks)
    assert not torch.allclose(encode(_ctx(gem_layers=11), x)[0], all_blocks, atol=1e-3)


# ---------------------------------------------------------------- parity with the authors' code


@pytest.mark.parametrize("key", ["potsdam", "vaihingen", "openearthmap"])
def test_parity_with_the_authors_code(key):
    """Golden outputs of their GEMWrapper.forward (unmodified, open_clip 2.23 as they pin it, CPU fp32) per window of
    the Table-2 sliding windows (224, stride 112, count-averaged, written in the driver) on the tiny weights, with
    OpenAI's templates for the text; the label map by the protocol's post-processing (see the README)."""
    check_weights("gem")
    golden = load_golden("gem")
    image = processed_image(golden, key, 448)
    classes = [str(c) for c in golden[f"{key}/classes"]]
    config = build_config(
        "gem", dataset=str(golden[f"{key}/dataset"]), backbone="tiny-b16", pretrained="none", device="cpu",
        precision="fp32", long_side=None, **settings(golden),
    )  # fmt: skip
    assert_parity(Segmentor(config, classes), golden, key, image)
