"""Tests of the JBU upsamplers (alignclip.models.upsampler)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from alignclip.errors import CheckpointError, ConfigError, InputError, WeightsNotFoundError
from alignclip.models.upsampler import (
    JBULearnedRange,
    JBUOne,
    JBUStack,
    build_upsampler,
    load_upsampler_checkpoint,
)
from alignclip.ops.jbu import (
    FactoredFeatures,
    _bicubic_matrix,
    _tap_view,
    adaptive_conv,
    adaptive_conv_reference,
    bicubic_resize,
    cosine_logits,
    neighbour_dot_products,
    neighbour_dot_products_reference,
)

FEATUP_CKPT = ("featup", "clip_jbu_stack_cocostuff.ckpt")
JBU_ONE_SHAPES = {
    "up.range_temp": (),
    "up.sigma_spatial": (),
    "up.range_proj.0.weight": (32, 3, 1, 1),
    "up.range_proj.0.bias": (32,),
    "up.range_proj.3.weight": (32, 32, 1, 1),
    "up.range_proj.3.bias": (32,),
    "up.fixup_proj.0.weight": (121, 124, 1, 1),
    "up.fixup_proj.0.bias": (121,),
    "up.fixup_proj.3.weight": (121, 121, 1, 1),
    "up.fixup_proj.3.bias": (121,),
    "fixup_proj.1.weight": (512, 512, 1, 1),
    "fixup_proj.1.bias": (512,),
}


def _direct_step(step: JBULearnedRange, source: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
    """Straight transcription of the JBU step (unfold + einsum, as in the original code)."""
    r = step.radius
    d = 2 * r + 1
    b, _, h, w = guidance.shape
    keys = step.range_proj(guidance)
    neighbours = F.unfold(F.pad(keys, [r] * 4, mode="reflect"), d).view(b, keys.shape[1], d * d, h, w)
    logits = torch.einsum("bkthw,bkhw->bthw", neighbours, keys)
    range_kernel = torch.softmax(logits * step.range_temp.exp().clamp(1e-4, 1e4), dim=1)
    grid = torch.linspace(-1, 1, d)
    yy, xx = torch.meshgrid(grid, grid, indexing="ij")
    spatial = torch.exp(-(xx**2 + yy**2) / (2 * step.sigma_spatial**2)).view(1, d * d, 1, 1)
    kernel = range_kernel * spatial
    kernel = kernel / kernel.sum(1, keepdim=True).clamp(min=1e-7)
    kernel = kernel + 0.1 * step.fixup_proj(torch.cat([kernel, guidance], dim=1))
    up = F.interpolate(source, size=(h, w), mode="bicubic", align_corners=False)
    patches = F.unfold(F.pad(up, [r] * 4, mode="reflect"), d).view(b, source.shape[1], d * d, h, w)
    return torch.einsum("bcthw,bthw->bchw", patches, kernel)


def _direct_chain(model, source: torch.Tensor, guidance: torch.Tensor) -> torch.Tensor:
    x = source
    for step in model.steps():
        x = _direct_step(step, x, F.adaptive_avg_pool2d(guidance, (2 * x.shape[-2], 2 * x.shape[-1])))
    return x + 0.1 * model.fixup_proj(x)


def _randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Non-trivial weights (temperatures, sigmas, large fixups) so every term matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * (0.5 if p.dim() else 0.3) + (p.dim() == 0))
    return model.eval()


# --- adaptive_conv ------------------------------------------------------------------------------


@pytest.mark.parametrize("radius", [3, 5])
@pytest.mark.parametrize("hw", [(8, 8), (13, 17), (5, 30), (16, 24)])
def test_adaptive_conv_matches_reference(radius, hw):
    torch.manual_seed(0)
    h, w = hw
    d = 2 * radius + 1
    x = torch.randn(2, 6, h + 2 * radius, w + 2 * radius)
    kernel = torch.randn(2, d * d, h, w)
    expected = adaptive_conv_reference(x, kernel)
    for tile, chunk in [(8, 16 * 2**20), (4, 1), (3, 5000)]:
        got = adaptive_conv(x, kernel, tile=tile, chunk_bytes=chunk)
        torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    cl = adaptive_conv(x.contiguous(memory_format=torch.channels_last), kernel)
    torch.testing.assert_close(cl, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("radius", [3, 5])
@pytest.mark.parametrize("hw", [(6, 6), (13, 17), (28, 28), (9, 30)])
def test_neighbour_dot_products_match_tap_loop(radius, hw):
    torch.manual_seed(1)
    keys = torch.randn(2, 5, *hw)
    expected = neighbour_dot_products_reference(keys, radius)
    assert expected.shape == (2, *hw, (2 * radius + 1) ** 2)
    for tile, chunk in [(8, 16 * 2**20), (4, 1), (5, 3000)]:
        got = neighbour_dot_products(keys, radius, tile=tile, chunk_bytes=chunk)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_neighbour_dot_products_hand_values():
    # one channel, keys = column index: centre tap = x*x, tap (r, r+1) = x*(x+1), reflect at the edge
    keys = torch.arange(4.0).view(1, 1, 1, 4).expand(1, 1, 3, 4).contiguous()
    got = neighbour_dot_products(keys, 1)  # taps (i, j) row-major, j = 0 is the left neighbour
    x = torch.arange(4.0)
    left = torch.tensor([1.0, 0.0, 1.0, 2.0])  # reflect: the left neighbour of column 0 is column 1
    right = torch.tensor([1.0, 2.0, 3.0, 2.0])
    torch.testing.assert_close(got[0, 1, :, 4], x * x)
    torch.testing.assert_close(got[0, 1, :, 3], x * left)
    torch.testing.assert_close(got[0, 1, :, 5], x * right)


@pytest.mark.parametrize(
    ("hw", "size", "pad"), [((14, 14), (28, 28), 5), ((3, 5), (6, 10), 3), ((7, 9), (20, 13), 0), ((10, 10), (5, 5), 2)]
)
@pytest.mark.parametrize("channels_last", [False, True])
def test_bicubic_resize_matches_interpolate_and_reflect_pad(hw, size, pad, channels_last):
    x = torch.randn(2, 6, *hw, dtype=torch.float64)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    expected = F.interpolate(x, size=size, mode="bicubic", align_corners=False)
    expected = F.pad(expected, [pad] * 4, mode="reflect") if pad else expected
    got = bicubic_resize(x, size, pad)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, atol=1e-12, rtol=1e-12)


def test_bicubic_matrix_by_hand():
    # x2 upsampling: output 1 samples input 0.25 -> Keys' weights at t = 0.25 (A = -0.75), taps -1, 0, 1, 2
    a, t = -0.75, 0.25
    w = [
        ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
        ((a + 2) * t - (a + 3)) * t * t + 1,
        ((a + 2) * (1 - t) - (a + 3)) * (1 - t) ** 2 + 1,
        ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a,
    ]
    m = _bicubic_matrix(4, 8, torch.device("cpu"), torch.float64)
    torch.testing.assert_close(m[1], torch.tensor([w[0] + w[1], w[2], w[3], 0.0], dtype=torch.float64))  # clamped
    torch.testing.assert_close(m.sum(1), torch.ones(8, dtype=torch.float64))  # constants stay constant
    with pytest.raises(InputError, match="reflect padding"):
        bicubic_resize(torch.zeros(1, 1, 2, 2), (4, 4), pad=4)


def test_tap_view_positions_by_hand():
    tile, d = 2, 3  # P = 4: per tile a [4, 16] matrix
    dense = torch.arange(3 * 4 * 16).view(3, 4, 16)
    view = _tap_view(dense, tile, d)
    for n, ty, tx, i, j in [(0, 0, 0, 0, 0), (1, 1, 0, 2, 1), (2, 1, 1, 2, 2), (0, 0, 1, 1, 2)]:
        assert view[n, ty, tx, i, j] == dense[n, ty * tile + tx, (ty + i) * 4 + (tx + j)]
    grid = _tap_view(dense[:2].contiguous(), tile, d, grid=(1, 2))
    assert torch.equal(grid[0, 1], view[1])


def test_factored_features_hand_example():
    # two pixels, two patches, three channels: dense = operator @ coeffs + bias
    operator = torch.tensor([[[1.0, 0.0], [0.5, 0.5]]])  # [1, 2 pixels, 2 patches]
    coeffs = torch.tensor([[[3.0, 0.0, 4.0], [0.0, 2.0, 0.0]]])  # [1, 2 patches, 3 channels]
    bias = torch.tensor([0.0, 1.0, 0.0])
    feats = FactoredFeatures(operator, coeffs, bias, (1, 2))
    dense = feats.dense()
    assert feats.shape == dense.shape == (1, 3, 1, 2)
    torch.testing.assert_close(dense[0, :, 0, 0], torch.tensor([3.0, 1.0, 4.0]))
    torch.testing.assert_close(dense[0, :, 0, 1], torch.tensor([1.5, 2.0, 2.0]))
    text = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]])  # [1, Q=2, C]
    logits = cosine_logits(feats, text)
    norm0, norm1 = math.sqrt(26.0), math.sqrt(1.5**2 + 4 + 4)
    expected = torch.tensor([[[[3 / norm0, 1.5 / norm1]], [[4 / norm0, 2 / norm1]]]])
    torch.testing.assert_close(logits, expected)
    torch.testing.assert_close(cosine_logits(dense, text), expected)


@pytest.mark.parametrize("with_bias", [True, False])
def test_factored_cosine_logits_match_dense(with_bias):
    torch.manual_seed(5)
    operator, coeffs = torch.randn(3, 50, 9), torch.randn(3, 9, 20)
    bias = torch.randn(20) if with_bias else None
    feats = FactoredFeatures(operator, coeffs, bias, (5, 10))
    text = F.normalize(torch.randn(3, 4, 20), dim=-1)
    torch.testing.assert_close(cosine_logits(feats, text), cosine_logits(feats.dense(), text), atol=1e-5, rtol=1e-5)
    zero = FactoredFeatures(torch.zeros(1, 4, 2), torch.randn(1, 2, 3), None, (2, 2))
    assert torch.equal(cosine_logits(zero, torch.ones(1, 1, 3)), torch.zeros(1, 1, 2, 2))


@pytest.mark.parametrize("cls", [JBUOne, JBUStack])
def test_factored_output_matches_dense_output(cls):
    torch.manual_seed(6)
    model = _randomise(cls(40), seed=2)
    source, guidance = torch.randn(2, 40, 6, 6), torch.randn(2, 3, 96, 96)
    text = F.normalize(torch.randn(2, 5, 40), dim=-1)
    with torch.no_grad():
        dense = model(source, guidance)
        feats = model(source, guidance, factored=True)
        assert isinstance(feats, FactoredFeatures) and feats.shape == dense.shape
        torch.testing.assert_close(feats.dense(), dense, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(cosine_logits(feats, text), cosine_logits(dense, text), atol=1e-5, rtol=1e-5)
        # no operator path (h*w >= C) or no fold: the dense tensor comes back
        assert isinstance(model(source, guidance, operator_matmul=False, factored=True), torch.Tensor)
        assert isinstance(model(source, guidance, fold_final_proj=False, factored=True), torch.Tensor)


def test_adaptive_conv_one_hot_tap_is_a_shift():
    x = torch.arange(2 * 3 * 14 * 16, dtype=torch.float32).view(2, 3, 14, 16)  # r=3: H=8, W=10
    kernel = torch.zeros(2, 49, 8, 10)
    kernel[:, 2 * 7 + 5] = 1.0  # tap (i=2, j=5)
    torch.testing.assert_close(adaptive_conv(x, kernel), x[:, :, 2:10, 5:15])


def test_adaptive_conv_uniform_kernel_is_a_box_filter():
    torch.manual_seed(1)
    x = torch.randn(1, 4, 19, 21)  # r=5: H=9, W=11
    kernel = torch.full((1, 121, 9, 11), 1 / 121)
    torch.testing.assert_close(adaptive_conv(x, kernel), F.avg_pool2d(x, 11, stride=1))
    # hand value: all-ones input, kernel of ones -> every output is the tap count
    ones = adaptive_conv(torch.ones(1, 2, 19, 21), torch.ones(1, 121, 9, 11))
    assert torch.all(ones == 121)


def test_adaptive_conv_rejects_bad_shapes():
    with pytest.raises(InputError, match="odd square"):
        adaptive_conv(torch.zeros(1, 2, 10, 10), torch.zeros(1, 48, 4, 4))
    with pytest.raises(InputError, match="pad x by the radius 3"):
        adaptive_conv(torch.zeros(1, 2, 10, 10), torch.zeros(1, 49, 5, 4))


# --- modules ------------------------------------------------------------------------------------


def test_parameter_counts_and_names():
    one, stack = JBUOne(512), JBUStack(512)
    assert sum(p.numel() for p in one.parameters()) == 293_729
    assert sum(p.numel() for p in stack.parameters()) == 287_588
    assert {k: tuple(v.shape) for k, v in one.state_dict().items()} == JBU_ONE_SHAPES
    assert len(stack.state_dict()) == 42
    assert stack.state_dict()["up4.fixup_proj.0.weight"].shape == (49, 52, 1, 1)


def test_spatial_kernel_hand_values():
    step = JBULearnedRange(radius=1)  # grid -1, 0, 1 and sigma 1
    e = math.exp(-0.5)
    expected = torch.tensor([e * e, e, e * e, e, 1.0, e, e * e, e, e * e])
    torch.testing.assert_close(step.spatial_kernel().detach(), expected)


@pytest.mark.parametrize("cls", [JBUOne, JBUStack])
def test_forward_matches_direct_transcription(cls):
    torch.manual_seed(2)
    model = _randomise(cls(16)).double()  # float64: sharp random softmaxes amplify rounding
    source = torch.randn(2, 16, 3, 4, dtype=torch.float64)
    guidance = torch.randn(2, 3, 48, 64, dtype=torch.float64)
    with torch.no_grad():
        expected = _direct_chain(model, source, guidance)
        got = model(source, guidance, fold_final_proj=False, operator_matmul=False)
    assert got.shape == (2, 16, 48, 64) and got.dtype == torch.float64
    torch.testing.assert_close(got, expected, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("cls", [JBUOne, JBUStack])
def test_exact_reorderings_match_plain_order(cls):
    torch.manual_seed(3)
    model = _randomise(cls(40), seed=1)  # h*w = 36 < C = 40: the operator path is taken
    source, guidance = torch.randn(2, 40, 6, 6), torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        plain = model(source, guidance, fold_final_proj=False, operator_matmul=False)
        # the steps do not preserve constants (taps sum != 1): the bias must stay outside them
        const = model._run_steps(torch.ones(2, 40, 6, 6), guidance)
        assert (const - 1).abs().max() > 1e-2
        for fold in (True, False):
            for as_matrix in (True, False):
                got = model(source, guidance, fold_final_proj=fold, operator_matmul=as_matrix)
                scale = plain.abs().max()
                assert (got - plain).abs().max() <= 1e-4 * scale


@pytest.mark.parametrize("cls", [JBUOne, JBUStack])
def test_reference_flops_count_the_direct_transcription(cls):
    from torch.utils.flop_counter import FlopCounterMode

    model = cls(24).eval()
    source, guidance = torch.randn(2, 24, 3, 5), torch.randn(2, 3, 48, 80)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        _direct_chain(model, source, guidance)
    assert model.reference_flops(2, 3, 5) == counter.get_total_flops()


def test_reference_flops_of_a_clip_window():
    # ViT-B/16 window: 14x14 patches of 512 channels; the final 1x1 conv at 224^2 alone is 26.3 GFLOP
    flops = JBUOne(512).reference_flops(1, 14, 14)
    final = 2 * 224 * 224 * 512 * 512
    adaptive = 2 * 121 * 512 * (28**2 + 56**2 + 112**2 + 224**2)
    assert final == 26_306_674_688 and 39e9 < flops < 40e9 and flops > final + adaptive


def test_eval_mode_is_deterministic_and_train_mode_uses_dropout():
    torch.manual_seed(4)
    model = build_upsampler("jbu_one", feat_dim=16)
    assert not model.training
    source, guidance = torch.randn(1, 16, 4, 4), torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        first, second = model(source, guidance), model(source, guidance)
        assert torch.equal(first, second)
        assert first.shape == (1, 16, 64, 64) and torch.isfinite(first).all()
        model.train()
        assert not torch.equal(model(source, guidance), model(source, guidance))


def test_forward_rejects_bad_inputs():
    model = JBUOne(16).eval()
    with pytest.raises(InputError, match="feat_dim=16"):
        model(torch.zeros(1, 8, 4, 4), torch.zeros(1, 3, 64, 64))
    with pytest.raises(InputError, match="RGB crop"):
        model(torch.zeros(1, 16, 4, 4), torch.zeros(2, 3, 64, 64))
    with pytest.raises(InputError, match="larger crop"):
        model(torch.zeros(1, 16, 2, 4), torch.zeros(1, 3, 32, 64))


# --- building and checkpoints -------------------------------------------------------------------


def test_build_upsampler_names():
    assert build_upsampler("none") is None
    assert isinstance(build_upsampler("jbu_stack", feat_dim=8), JBUStack)
    with pytest.raises(ConfigError, match="jbu_one, jbu_stack, none"):
        build_upsampler("jbu")
    with pytest.raises(ConfigError, match="positive int"):
        build_upsampler("jbu_one", feat_dim=0)


def test_missing_checkpoint_names_the_fix(tmp_path):
    missing = tmp_path / "nope.ckpt"
    with pytest.raises(WeightsNotFoundError) as info:
        build_upsampler("jbu_one", checkpoint=missing)
    message = str(info.value)
    assert f"not found at {missing}" in message
    assert "xclip_jbu_one_million_aid.ckpt" in message and "--upsampler-ckpt none" in message


def test_lightning_round_trip(tmp_path):
    source_model = _randomise(JBUOne(16), seed=5)
    state = {f"upsampler.{k}": v for k, v in source_model.state_dict().items()}
    state["model.backbone.weight"] = torch.zeros(3)  # a whole Lightning model: ignored
    path = tmp_path / "jbu_one.ckpt"
    torch.save({"state_dict": state, "epoch": 3, "pytorch-lightning_version": "1.9.4"}, path)
    loaded = build_upsampler("jbu_one", feat_dim=16, checkpoint=path)
    for key, value in source_model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value)
    plain = tmp_path / "plain.pt"  # a plain state dict without prefix loads too
    torch.save(source_model.state_dict(), plain)
    load_upsampler_checkpoint(JBUOne(16), plain)


def test_bad_checkpoints_raise_checkpoint_error(tmp_path):
    good = {f"upsampler.{k}": v for k, v in JBUOne(16).state_dict().items()}
    cases = {
        "missing": (
            {k: v for k, v in good.items() if k != "upsampler.up.range_temp"},
            "'up.range_temp'",
        ),
        "shape": ({**good, "upsampler.up.range_temp": torch.zeros(2)}, "feat_dim"),
    }
    for name, (state, pattern) in cases.items():
        path = tmp_path / f"{name}.ckpt"
        torch.save({"state_dict": state}, path)
        with pytest.raises(CheckpointError, match=pattern):
            load_upsampler_checkpoint(JBUOne(16), path)
    plain = tmp_path / "extra.pt"  # a plain state dict may not carry foreign keys
    torch.save({**JBUOne(16).state_dict(), "head.weight": torch.zeros(1)}, plain)
    with pytest.raises(CheckpointError, match="unexpected key 'head.weight'"):
        load_upsampler_checkpoint(JBUOne(16), plain)
    garbage = tmp_path / "garbage.ckpt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_upsampler_checkpoint(JBUOne(16), garbage)


def test_real_featup_checkpoint(fixtures_dir):
    path = fixtures_dir.joinpath(*FEATUP_CKPT)
    if not path.is_file():
        pytest.skip(f"FeatUp checkpoint absent: {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    assert all(k.startswith("upsampler.") for k in ckpt["state_dict"])
    model = build_upsampler("jbu_stack", feat_dim=512, checkpoint=path)
    assert torch.equal(model.up3.range_temp, ckpt["state_dict"]["upsampler.up3.range_temp"])
    with pytest.raises(CheckpointError, match="missing key 'up.range_temp'"):
        load_upsampler_checkpoint(JBUOne(512), path)
    torch.manual_seed(6)
    with torch.no_grad():
        # trained steps against the direct transcription (few channels: steps are channel-wise)
        source, guidance = torch.randn(1, 8, 5, 7), torch.randn(1, 3, 10, 14)
        torch.testing.assert_close(
            model.up2(source, guidance),
            _direct_step(model.up2, source, guidance),
            atol=1e-4,
            rtol=1e-4,
        )
        out = model(torch.randn(1, 512, 14, 14), torch.randn(1, 3, 224, 224))
    assert out.shape == (1, 512, 224, 224) and torch.isfinite(out).all()
