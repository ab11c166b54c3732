"""Tests for alignclip.models.templates: the two template sets and template files."""

from __future__ import annotations

import pytest
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES

from alignclip.errors import ConfigError, InputError
from alignclip.models.templates import (
    OPENAI_TEMPLATES,
    REMOTE_SENSING_TEMPLATES,
    TEMPLATE_SETS,
    get_templates,
)

PAPER_TABLE5 = [
    "a low-quality aerial image of {}.",
    "a cropped remote sensing image of {}.",
    "a remote sensing interpretation map of {}.",
    "a satellite image containing hardly recognizable {}.",
    "a low-resolution remote sensing image of {}.",
]


def test_counts_are_80_each():
    assert len(OPENAI_TEMPLATES) == 80
    assert len(REMOTE_SENSING_TEMPLATES) == 80


@pytest.mark.parametrize("name", sorted(TEMPLATE_SETS))
def test_templates_distinct_with_one_slot(name):
    templates = TEMPLATE_SETS[name]
    assert len(set(templates)) == len(templates)
    for template in templates:
        assert template.count("{}") == 1, template
        assert template.count("{") == 1 and template.count("}") == 1, template
        assert template.format("road") != template


def test_remote_sensing_templates_plain_ascii_sentences():
    for template in REMOTE_SENSING_TEMPLATES:
        assert template.isascii() and template.endswith("."), template
        assert template == template.strip() and "  " not in template, template


def test_paper_table5_templates_present():
    for template in PAPER_TABLE5:
        assert template in REMOTE_SENSING_TEMPLATES
    assert REMOTE_SENSING_TEMPLATES[0].format("building") == "a low-quality aerial image of building."


def test_openai_set_equals_open_clip_rendered():
    assert OPENAI_TEMPLATES == [t("{}") for t in OPENAI_IMAGENET_TEMPLATES]
    assert OPENAI_TEMPLATES[0] == "a bad photo of a {}."
    assert OPENAI_TEMPLATES[0].format("tree") == OPENAI_IMAGENET_TEMPLATES[0]("tree")


def test_get_templates_by_name_returns_copy():
    templates = get_templates("remote-sensing")
    assert templates == REMOTE_SENSING_TEMPLATES
    templates.append("x {}.")
    assert len(get_templates("remote-sensing")) == 80
    assert get_templates("openai") == OPENAI_TEMPLATES


def test_get_templates_from_file(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("# my templates\n\na photo of {}.\n  an aerial view of the {}.  \n# end\n")
    assert get_templates(str(path)) == ["a photo of {}.", "an aerial view of the {}."]


@pytest.mark.parametrize("bad", ["a photo of a cat.", "a {} and a {}.", "a {0} photo."])
def test_file_line_without_one_slot_names_file_and_line(tmp_path, bad):
    path = tmp_path / "bad.txt"
    path.write_text(f"a photo of {{}}.\n\n{bad}\n")
    with pytest.raises(InputError, match=r"bad\.txt line 3"):
        get_templates(str(path))


def test_empty_file_rejected(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("# nothing\n\n")
    with pytest.raises(InputError, match="no templates"):
        get_templates(str(path))


def test_unknown_name_lists_sets_and_mentions_files(tmp_path):
    with pytest.raises(ConfigError) as info:
        get_templates("imagenet")
    message = str(info.value)
    assert "'openai'" in message and "'remote-sensing'" in message
    assert "file" in message and "\n" not in message
    with pytest.raises(ConfigError):
        get_templates(str(tmp_path / "missing.txt"))
