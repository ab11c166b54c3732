"""The segmentor end to end on the tiny random models (pipeline checks, CPU)."""

import numpy as np
import pytest
import torch

from alignclip.errors import ConfigError, InputError
from alignclip.evaluation.probes import PeakMemory
from alignclip.ops.postprocess import class_probabilities, predict_labels
from alignclip.ops.resize import bilinear_rows
from alignclip.ops.windows import accumulate_windows, extract_windows, window_boxes, window_counts
from alignclip.pipeline.config import build_config
from alignclip.pipeline.runtime import resolve_window_batch
from alignclip.pipeline.segmentor import Segmentor

CLASSES = ["background", "building,roof", "road", "water"]


def _image(h=150, w=260, seed=0):
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def _seg(preset="alignclip-d", **over):
    over.setdefault("long_side", 224)
    return Segmentor(build_config(preset, smoke=True, **over), CLASSES)


@pytest.fixture(scope="module")
def seg_d():
    return _seg()


def test_output_is_input_sized_labels(seg_d):
    img = _image()
    labels = seg_d.segment(img)
    assert labels.shape == img.shape[:2] and labels.dtype == np.uint8
    assert labels.max() < len(CLASSES)
    assert (
        seg_d.processing_size(img) == tuple(seg_d.preprocess(img).shape[-2:]) == (129, 224)
    )  # long side 224, 150 * 224 / 260 rounded
    assert seg_d.is_random


def test_deterministic_same_bits(seg_d):
    img = _image(seed=3)
    a = seg_d.predict(img)
    b = seg_d.predict(img)
    assert np.array_equal(a.labels, b.labels)
    assert torch.equal(a.logits, b.logits)


@pytest.mark.parametrize(
    "preset", ["clip", "maskclip", "sclip", "clearclip", "naclip", "segearth-ov", "segearth-ov+sga", "segearth-ov+cce"]
)
def test_every_preset_runs(preset):
    labels = _seg(preset).segment(_image(64, 100))
    assert labels.shape == (64, 100)


def test_alignclip_s_with_tiny_sam():
    labels = _seg("alignclip-s", vfm="tiny_sam").segment(_image(64, 100))
    assert labels.shape == (64, 100)


def test_switch_variants_run():
    img = _image(100, 120)
    for over in [
        dict(sga_source="upsampled"),
        dict(sga_scope="image"),
        dict(affinity="cosine"),
        dict(grid_align="clip"),
        dict(top_n=3),
        dict(sga_cls_term=False),
        dict(upsampler="none"),
    ]:
        assert _seg(**over).segment(img).shape == (100, 120)


def test_window_batching_does_not_change_results():
    img = _image(200, 330, seed=5)
    a = _seg(window_batch=32, long_side=None).predict(img).logits
    b = _seg(window_batch=2, long_side=None).predict(img).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_sga_off_equals_alpha_zero():
    img = _image(96, 96, seed=2)
    a = _seg("segearth-ov").predict(img).logits
    b = _seg("segearth-ov+sga", alpha=0.0).predict(img).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_cce_beta_zero_equals_no_cce():
    img = _image(96, 96, seed=4)
    a = _seg("segearth-ov").predict(img).logits
    b = _seg("segearth-ov+cce", beta=0.0).predict(img).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_threshold_sends_pixels_to_background():
    seg = _seg(prob_thd=1.0, bg_idx=2)
    assert (seg.segment(_image(64, 64)) == 2).all()


def test_bad_inputs():
    with pytest.raises(InputError, match="RGB uint8"):
        _seg().segment(np.zeros((10, 10), dtype=np.uint8))
    with pytest.raises(InputError, match="RGB uint8"):
        _seg().segment(np.zeros((10, 10, 3), dtype=np.uint16))
    with pytest.raises(ConfigError, match="bg_idx"):
        _seg(bg_idx=7)
    with pytest.raises(ConfigError, match="K_c"):
        _seg(n_clusters=500).segment(_image(64, 64))
    with pytest.raises(ConfigError, match="upsampler-ckpt"):
        Segmentor(build_config("segearth-ov", smoke=True, upsampler_ckpt=None), CLASSES)


def test_image_scope_sga_uses_global_top_patch():
    """With one window, per-image and per-window SGA must coincide."""
    img = _image(96, 96, seed=7)
    a = _seg("segearth-ov+sga", sga_scope="image").predict(img).logits
    b = _seg("segearth-ov+sga", sga_scope="window").predict(img).logits
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(
    ("preset", "resolution", "grid_align", "side"),
    [
        ("alignclip-s", "window", "vfm", 112),  # tiny_sam at the window's size: 7x7 patches
        ("alignclip-s", "native", "vfm", 224),  # tiny_sam at its native 224: 14x14 patches
        ("alignclip-s", "native", "clip", 112),  # grid_align=clip wins: CLIP's 7x7 grid
        ("alignclip-s", "window", "clip", 112),
        ("alignclip-d", "native", "vfm", 112),  # tiny ViT (DINO layout) has no native size
    ],
)
def test_vfm_input_size_follows_resolution_and_grid_align(preset, resolution, grid_align, side):
    seg = _seg(
        preset, long_side=None, crop=112, stride=112, vfm_resolution=resolution, grid_align=grid_align, window_batch=2
    )
    seen = []
    hook = seg.vfm.register_forward_hook(
        lambda m, args, out: seen.append((tuple(args[0].shape[-2:]), tuple(out[0].shape[1:3])))
    )
    try:
        labels = seg.segment(_image(112, 224))
    finally:
        hook.remove()
    assert labels.shape == (112, 224)
    assert seen and set(seen) == {((side, side), (side // 16, side // 16))}  # (VFM input, VFM grid) per call


def test_resolve_window_batch():
    assert resolve_window_batch("auto", "cpu") == 1
    assert resolve_window_batch("auto", torch.device("cuda", 1)) == 32
    assert resolve_window_batch("auto", "mps") == 32  # any accelerator
    assert resolve_window_batch(5, "cpu") == 5 and resolve_window_batch(1, "cuda") == 1
    for bad in (0, -3, "fast", "8", 2.0, True):
        with pytest.raises(ConfigError, match=r'"auto".*int >= 1'):
            resolve_window_batch(bad, "cpu")


def test_window_batch_config_validation():
    assert build_config("segearth-ov").window_batch == "auto"
    assert build_config("segearth-ov", window_batch=7).window_batch == 7
    for bad in (0, "fast", "8", 2.5, False):
        with pytest.raises(ConfigError, match=r"window_batch=.*\"auto\".*int >= 1"):
            build_config("segearth-ov", window_batch=bad)
    assert _seg("segearth-ov").window_batch == 1  # auto on CPU
    assert _seg("segearth-ov", window_batch=3).window_batch == 3


@torch.inference_mode()
def _reference_predict(seg: Segmentor, image: np.ndarray, strip_rows: int = 512):
    """The implementation before streaming: whole float image, one [Q, H, W] accumulator, dense count map."""
    c = seg.config
    resized = seg._resized(image)
    x = torch.from_numpy(np.ascontiguousarray(resized)).permute(2, 0, 1).float()
    img = (x - seg._mean) / seg._std
    _, height, width = img.shape
    boxes = window_boxes(height, width, c.crop, c.stride)
    text = None
    if c.sga and c.sga_scope == "image":
        text = seg._image_text(lambda y1, y2, x1, x2: img[:, y1:y2, x1:x2], boxes)
    out = torch.zeros(len(seg.classes.queries), height, width)
    for i in range(0, len(boxes), seg.window_batch):
        chunk = boxes[i : i + seg.window_batch]
        accumulate_windows(out, seg.window_logits(extract_windows(img, chunk), text), chunk)
    logits = out / window_counts(height, width, boxes)
    h0, w0 = image.shape[:2]
    labels = np.empty((h0, w0), dtype=np.uint8)
    for r in range(0, h0, strip_rows):
        rows = bilinear_rows(logits, (h0, w0), r, min(r + strip_rows, h0))
        probs = class_probabilities(rows, seg.query_to_class, seg.classes.num_classes, c.logit_scale)
        labels[r : r + rows.shape[1]] = predict_labels(probs, c.prob_thd, c.bg_idx).numpy()
    return labels, logits


@pytest.mark.parametrize(
    ("preset", "over", "size"),
    [
        ("alignclip-d", dict(long_side=224), (150, 260)),  # resized: processing size differs from the input's
        ("alignclip-d", dict(long_side=None, crop=64, stride=40, window_batch=3), (131, 157)),  # batches cross bands
        ("segearth-ov+sga", dict(long_side=None, crop=48, stride=32, sga_scope="image", window_batch=4), (97, 121)),
        ("clip", dict(long_side=None, crop=64, stride=48, window_batch=32), (200, 90)),
    ],
)
def test_streaming_is_bit_identical_to_the_dense_implementation(preset, over, size):
    seg = _seg(preset, **over)
    img = _image(*size, seed=11)
    ref_labels, ref_logits = _reference_predict(seg, img)
    pred = seg.predict(img)
    assert torch.equal(pred.logits, ref_logits)
    assert np.array_equal(pred.labels, ref_labels)
    assert torch.equal(seg.image_logits(seg.preprocess(img)), ref_logits)


@pytest.mark.parametrize(
    ("preset", "over", "size"),
    [
        ("alignclip-d", dict(crop=64, stride=40, window_batch=3), (131, 157)),
        ("segearth-ov+sga", dict(crop=48, stride=32, sga_scope="image"), (97, 121)),
        ("clip", dict(crop=32, stride=24, window_batch=32), (203, 57)),
        ("segearth-ov", dict(), (61, 250)),  # smaller than the crop along one side
    ],
)
def test_streamed_labels_equal_kept_logits_labels(preset, over, size):
    seg = _seg(preset, long_side=None, **over)
    img = _image(*size, seed=13)
    streamed = seg.predict(img, keep_logits=False)
    assert streamed.logits is None
    assert np.array_equal(streamed.labels, seg.predict(img).labels)


def test_keep_logits_false_with_resize_gives_the_same_labels(seg_d):
    img = _image(150, 260, seed=17)
    pred = seg_d.predict(img, keep_logits=False)
    assert pred.logits is None and np.array_equal(pred.labels, seg_d.predict(img).labels)


def test_huge_tile_streams_in_bounded_memory():
    """3000² without resize: full-size float buffers (the [Q, H, W] accumulator, 180 MB, and the float image,
    108 MB; ~650 MB peak rise before streaming) exceed the bound; the stream holds a few [Q, 224, W] bands
    (~13 MB each; ~90 MB peak rise measured)."""
    seg = _seg("clip", long_side=None, crop=224, stride=224, window_batch=1)
    side = 3000
    img = _image(side, side, seed=1)
    seg.predict(img[:300, :300], keep_logits=False)  # warm-up: model buffers, allocator
    meter = PeakMemory(torch.device("cpu"))
    with meter.measure():
        labels = seg.predict(img, keep_logits=False).labels
    assert labels.shape == (side, side)
    full_buffers = (len(seg.classes.queries) + 3) * side * side * 4
    assert meter.peak_bytes < 200 * 2**20 < full_buffers, f"peak rise {meter.peak_bytes / 2**20:.0f} MB"


def test_encoders_see_the_whole_image_bounded_in_size():
    """EncoderContext.image: the normalised image at the processing size, a huge tile downsampled to a long side of
    IMAGE_CONTEXT_SIDE (area average, in bands), a new callable per image."""
    from alignclip.methods.base import IMAGE_CONTEXT_SIDE

    img = torch.rand(3, 40, 60)
    small = Segmentor._whole_image(lambda y1, y2, x1, x2: img[:, y1:y2, x1:x2], 40, 60)
    assert torch.equal(small(), img[None])
    big = torch.rand(3, 2 * IMAGE_CONTEXT_SIDE, 3 * IMAGE_CONTEXT_SIDE)
    whole = Segmentor._whole_image(lambda y1, y2, x1, x2: big[:, y1:y2, x1:x2], *big.shape[1:])()
    assert whole.shape == (1, 3, round(2 * IMAGE_CONTEXT_SIDE / 3), IMAGE_CONTEXT_SIDE)
    expected = torch.nn.functional.interpolate(big[None], size=whole.shape[-2:], mode="area")
    torch.testing.assert_close(whole, expected, atol=1e-5, rtol=1e-5)
