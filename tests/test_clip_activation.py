"""QuickGELU: CLIP is built with the activation its weights were trained with (issue: fidelity on the real path)."""

import json
import logging

import pytest
import torch

from alignclip.errors import CheckpointError
from alignclip.models.clip import (
    CONFIG_DIR,
    GELU,
    QUICK_GELU,
    built_activation,
    create_clip,
    is_torchscript_archive,
    trained_activation,
)


def test_openai_vit_b16_architecture_has_quickgelu_in_both_towers():
    # load_weights=False: the architecture of ViT-B-16 + openai, nothing downloaded
    bundle = create_clip("ViT-B-16", "openai", load_weights=False)
    assert bundle.activation == QUICK_GELU
    assert built_activation(bundle.model) == {"visual": QUICK_GELU, "text": QUICK_GELU}


def test_gelu_tags_keep_gelu():
    bundle = create_clip("ViT-B-16", "laion2b_s34b_b88k", load_weights=False)
    assert bundle.activation == GELU and built_activation(bundle.model) == {"visual": GELU, "text": GELU}


@pytest.mark.parametrize(
    ("name", "pretrained", "expected"),
    [
        ("ViT-B-16", "openai", QUICK_GELU),
        ("ViT-B-16", "metaclip_400m", QUICK_GELU),
        ("ViT-B-16", "laion2b_s34b_b88k", GELU),
        ("ViT-B-16-quickgelu", "none", QUICK_GELU),
        ("ViT-B-16", "none", GELU),
        ("tiny", "none", QUICK_GELU),
    ],
)
def test_trained_activation_of_tags_and_names(name, pretrained, expected):
    assert trained_activation(name, pretrained)[0] == expected


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    """The tiny CLIP as an open_clip state dict and as a TorchScript archive (OpenAI's release format)."""
    folder = tmp_path_factory.mktemp("clip_files")
    model = create_clip("tiny", "none").model
    torch.save(model.state_dict(), folder / "state_dict.pt")
    traced = torch.jit.trace(model, (torch.zeros(1, 3, 224, 224), torch.zeros(1, 77, dtype=torch.long)), strict=False)
    traced.save(str(folder / "openai_style.pt"))
    return folder, model


def test_torchscript_archive_is_detected_and_loaded(tiny_files):
    folder, model = tiny_files
    assert is_torchscript_archive(folder / "openai_style.pt")
    assert not is_torchscript_archive(folder / "state_dict.pt")
    bundle = create_clip("tiny", str(folder / "openai_style.pt"))
    assert bundle.activation == QUICK_GELU and bundle.weights_id.startswith("sha256:")
    for (key, a), b in zip(bundle.model.state_dict().items(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


def test_torchscript_archive_with_a_gelu_name_is_built_with_quickgelu_and_says_so(tiny_files, tmp_path, caplog):
    folder, _ = tiny_files
    gelu_tiny = tmp_path / "tiny_gelu.json"
    cfg = json.loads((CONFIG_DIR / "tiny.json").read_text())
    cfg.pop("quick_gelu")
    gelu_tiny.write_text(json.dumps(cfg))
    with caplog.at_level(logging.WARNING, logger="alignclip.models.clip"):
        bundle = create_clip(str(gelu_tiny), str(folder / "openai_style.pt"))
    assert bundle.activation == QUICK_GELU
    assert built_activation(bundle.model) == {"visual": QUICK_GELU, "text": QUICK_GELU}
    assert "TorchScript archive (trained with QuickGELU)" in caplog.text


def test_state_dict_with_a_gelu_name_warns_how_to_name_quickgelu(tiny_files, caplog):
    folder, _ = tiny_files
    with caplog.at_level(logging.WARNING, logger="alignclip.models.clip"):
        create_clip("ViT-B-16", "none")  # random weights: nothing to warn about
    assert caplog.text == ""
    # a state dict of another architecture is refused by open_clip; the warning comes first and names the fix
    with (
        caplog.at_level(logging.WARNING, logger="alignclip.models.clip"),
        pytest.raises(CheckpointError, match="is not a ViT-B-16 state dict"),
    ):
        create_clip("ViT-B-16", str(folder / "state_dict.pt"))
    assert "name the architecture ViT-B-16-quickgelu" in caplog.text


def test_torchscript_archive_of_another_architecture_is_refused_in_one_line(tiny_files):
    folder, _ = tiny_files
    with pytest.raises(CheckpointError, match="is not a ViT-B-16 checkpoint") as info:
        create_clip("ViT-B-16", str(folder / "openai_style.pt"))
    assert "\n" not in str(info.value)


def test_activation_is_recorded_in_the_weights_identity():
    from alignclip.pipeline.segmentor import build_segmentor

    seg = build_segmentor("segearth-ov", classes=["a", "b"], smoke=True)
    assert seg.weights_identity()["clip_activation"] == QUICK_GELU
