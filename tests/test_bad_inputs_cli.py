"""Bad inputs through the CLI: one line on stderr, exit status 2, nothing changed on disk, no model built.

Also the typed ``--set`` / bench-preset parsing, the overlay legend's fonts and where ``notebook run`` executes.
"""

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from alignclip.cli.main import main
from alignclip.errors import ConfigError

SMOKE = ["--smoke", "--set", "long_side=224"]


def snapshot(root: Path) -> dict[str, tuple]:
    """Every file and folder under ``root``: ``{path: (size, sha256)}`` for files, ``{path: "dir"}`` for folders."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = (p.stat().st_size, hashlib.sha256(p.read_bytes()).hexdigest()) if p.is_file() else "dir"
    return out


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A folder with an image and class files, also the working directory (relative outputs land here)."""
    monkeypatch.chdir(tmp_path)
    Image.fromarray((np.random.default_rng(0).random((120, 200, 3)) * 255).astype(np.uint8)).save("scene.png")
    Image.fromarray((np.random.default_rng(1).random((3, 500, 3)) * 255).astype(np.uint8)).save("thin.png")
    Path("classes.txt").write_text("road\nbuilding\n")
    Path("many.txt").write_text("".join(f"class {i}\n" for i in range(300)))
    Path("binary.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe binary")
    Path("existing.png").write_bytes(b"keep me")
    Path("a_file").write_text("not a folder")
    Path("folder").mkdir()
    return tmp_path


@pytest.fixture
def no_models(monkeypatch):
    """Fail the test if a segmentor (and so any model) is built."""

    def boom(*args, **kwargs):
        raise AssertionError("a model was built before the input was refused")

    monkeypatch.setattr("alignclip.pipeline.segmentor.Segmentor.__init__", boom)


def refused(argv, root, capsys, needle) -> str:
    before = snapshot(root)
    rc = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert rc == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err and needle in lines[0], err
    assert snapshot(root) == before  # nothing written, nothing half-written
    return lines[0]


SEGMENT = ["segment", "scene.png", "--classes", "road", "building", *SMOKE]


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--set", "sga=maybe"], "sga='maybe' is not a bool"),
        (["--set", "n_clusters=2.5"], "n_clusters='2.5' is not an int"),
        (["--set", "long_side=big"], "long_side='big' is not an int or none"),
        (["--set", "alpha=high"], "alpha='high' is not a number"),
        (["--device", "gpu0"], "device 'gpu0' is not a device name"),
        (["--out", "mask.jpg"], "must end in .png, .tif or .tiff"),
        (["--overlay", "overlay.tif"], "must end in .png"),
        (["--out", "folder"], "is a folder"),
        (["--out", "missing/mask.png"], "folder missing does not exist"),
        (["--out", "a_file/mask.png"], "is a file, not a folder"),
        (["--out", "existing.png"], "exists; pass --force"),
        (["--out", "new_mask.png", "--overlay", "existing.png"], "--overlay existing.png exists"),
        (["--out", "same.png", "--overlay", "same.png"], "same file"),
    ],
)
def test_segment_refuses_before_any_model(work, capsys, no_models, extra, needle):
    refused([*SEGMENT, *extra], work, capsys, needle)


def test_outputs_checked_before_any_is_written(work, capsys, no_models):
    """A new --out with an existing --overlay used to write the mask, then fail on the overlay."""
    refused([*SEGMENT, "--out", "m.png", "--overlay", "existing.png"], work, capsys, "exists")
    assert not (work / "m.png").exists()


def test_read_only_out_folder(work, capsys, no_models, monkeypatch):
    locked = work / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p).resolve() != locked and real_access(p, mode, **kw))
    refused([*SEGMENT, "--out", "locked/mask.png"], work, capsys, "not writable")


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_out_folder_for_real(work, capsys, no_models):
    locked = work / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        refused([*SEGMENT, "--overlay", "locked/overlay.png"], work, capsys, "not writable")
    finally:
        locked.chmod(0o755)


def test_too_many_classes_for_a_mask(work, capsys, no_models):
    argv = ["segment", "scene.png", "--classes-file", "many.txt", "--out", "mask.png", *SMOKE]
    refused(argv, work, capsys, "300 classes do not fit a mask")


def test_binary_classes_file(work, capsys, no_models):
    argv = ["segment", "scene.png", "--classes-file", "binary.txt", *SMOKE]
    refused(argv, work, capsys, "is not UTF-8 text")
    Path("nul.txt").write_bytes(b"road\x00\nbuilding\n")
    refused(["segment", "scene.png", "--classes-file", "nul.txt", *SMOKE], work, capsys, "binary file")


def test_thin_image_refused_with_the_fix(work, capsys, no_models):
    line = refused(["segment", "thin.png", "--classes", "a", "b", *SMOKE], work, capsys, "too thin")
    assert "33 px" in line and "--upsampler none" in line
    Image.fromarray(np.zeros((40, 600, 3), np.uint8)).save("wide.png")  # thick enough, but not after the resize
    line = refused(
        ["segment", "wide.png", "--classes", "a", "b", "--smoke"], work, capsys, "after the long-side resize"
    )
    assert "--set long_side=none" in line


def test_thin_image_limit_is_exact(work):
    """The limit is what the pipeline needs: 33 px (3 patches of 16 for jbu_one) runs, any size without upsampler."""
    Image.fromarray(np.zeros((33, 300, 3), np.uint8)).save("ok.png")
    assert main(["segment", "ok.png", "--classes", "a", "b", "--smoke", "--set", "long_side=none"]) == 0
    assert main(["segment", "thin.png", "--classes", "a", "b", "--smoke", "--preset", "segearth-ov"] + [
        "--upsampler", "none", "--set", "long_side=none"
    ]) == 0  # fmt: skip


def test_min_patches_match_the_upsamplers():
    from alignclip.models.upsampler import build_upsampler
    from alignclip.pipeline.runtime import UPSAMPLER_MIN_PATCHES

    for name, patches in UPSAMPLER_MIN_PATCHES.items():
        module = build_upsampler(name, feat_dim=8)
        if module is None:
            assert patches == 1
        else:  # reflect padding of half the radius needs sides > radius / 2
            assert patches == module.steps()[0].radius // 2 + 1


def test_bench_preset_with_wrong_types(work, capsys):
    for spec, needle in [("alignclip-d:sga=maybe", "sga='maybe'"), ("alignclip-d:n_clusters=2.5", "n_clusters")]:
        line = refused(["bench", "--smoke", "--presets", spec, "--json", "bench.json"], work, capsys, needle)
        assert "bench preset" in line
    refused(["bench", "--smoke", "--json", "folder"], work, capsys, "is a folder")


def test_notebook_list_element_types(work, capsys):
    refused(["notebook", "run", "03", "-p", "datasets", "[1, 2]"], work, capsys, "list of str")
    refused(["notebook", "run", "05", "-p", "alphas", "['a']"], work, capsys, "list of float")
    refused(["notebook", "run-all", "-p", "no_such_parameter", "1"], work, capsys, "declared by none")
    refused(["notebook", "run", "03", "-p", "limit", "1", "-p", "limit", "2"], work, capsys, "given twice")


def test_keyboard_interrupt_is_one_line(work, capsys, monkeypatch):
    def interrupt(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("alignclip.pipeline.segmentor.Segmentor.__init__", interrupt)
    before = snapshot(work)
    try:
        rc = main([*SEGMENT, "--out", "mask.png"])
    except KeyboardInterrupt:  # escaping main would stop pytest itself
        pytest.fail("KeyboardInterrupt escaped main() (a traceback for the user)")
    assert rc == 130
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: interrupted (Ctrl-C)"]
    assert snapshot(work) == before


# ------------------------------------------------------------------------------------------ typed values
@pytest.mark.parametrize(
    "text,value", [("off", False), ("no", False), ("0", False), ("FALSE", False), ("on", True), ("Yes", True)]
)
def test_set_bool_words(text, value):
    from alignclip.cli.args import config_from_args
    from alignclip.cli.main import build_parser

    args = build_parser().parse_args(["segment", "x.png", "--classes", "a", "--set", f"sga={text}", "--set", "cce=0"])
    config = config_from_args(args)
    assert config.sga is value and config.cce is False and config.to_dict()["sga"] is value


def test_set_typed_values():
    from alignclip.cli.args import parse_set

    assert parse_set(["long_side=none", "alpha=1", "window_batch=auto", "upsampler_ckpt=none", "top_n=2"]) == {
        "long_side": None,
        "alpha": 1.0,
        "window_batch": "auto",
        "upsampler_ckpt": "none",  # the string "none" (random weights), not None (no checkpoint given)
        "top_n": 2,
    }
    assert parse_set(["window_batch=4"])["window_batch"] == 4
    assert isinstance(parse_set(["alpha=1"])["alpha"], float)


def test_python_callers_get_type_errors():
    from alignclip.pipeline.config import SegmentorConfig, build_config

    with pytest.raises(ConfigError, match="sga='off' is a str; sga takes a bool"):
        build_config("alignclip-d", sga="off")
    with pytest.raises(ConfigError, match="n_clusters=2.5 is a float; n_clusters takes an int"):
        SegmentorConfig(n_clusters=2.5)
    with pytest.raises(ConfigError, match="top_n=True is a bool"):
        SegmentorConfig().replace(top_n=True)
    assert SegmentorConfig(alpha=1, long_side=None, n_clusters=np.int64(4)).alpha == 1
    assert SegmentorConfig(upsampler_ckpt=Path("up.ckpt")).upsampler_ckpt == "up.ckpt"


def test_bench_preset_typed():
    from alignclip.evaluation.bench import parse_bench_preset

    assert parse_bench_preset("alignclip-d:sga=off,n_clusters=4,long_side=none") == (
        "alignclip-d",
        {"sga": False, "n_clusters": 4, "long_side": None},
    )


# ------------------------------------------------------------------------------------------ legend fonts
def _legend(tmp_path: Path, name: str) -> np.ndarray:
    from alignclip.io.overlay import write_overlay

    path = tmp_path / f"legend_{len(list(tmp_path.iterdir()))}.png"
    write_overlay(path, np.full((64, 64, 3), 200, np.uint8), np.zeros((64, 64), np.int64), [name])
    return np.asarray(Image.open(path))[:, 64 + 28 :]  # the legend's text, right of the colour box


def _tofu(n: int) -> str:
    return "\U000f0000" * n  # a private-use character no font has: drawn as the missing-glyph box


def test_cyrillic_legend_is_not_boxes(tmp_path):
    assert not np.array_equal(_legend(tmp_path, "дорога"), _legend(tmp_path, _tofu(6)))


def test_cjk_legend_is_not_boxes(tmp_path):
    from alignclip.io.overlay import legend_fonts

    if legend_fonts(["建筑"])[1]:
        pytest.skip("no font with Chinese characters: pip install 'alignclip[fonts]'")
    assert not np.array_equal(_legend(tmp_path, "建筑"), _legend(tmp_path, _tofu(2)))


def test_missing_glyphs_warn(tmp_path):
    with pytest.warns(UserWarning, match="no font has the character"):
        _legend(tmp_path, "x" + _tofu(1))


# ------------------------------------------------------------------------------------------ notebook cwd
def test_notebook_runs_in_the_current_folder(tmp_path, monkeypatch):
    papermill = pytest.importorskip("papermill")
    from alignclip.study.notebooks import NOTEBOOK_DIR

    seen = {}
    monkeypatch.setattr(papermill, "execute_notebook", lambda src, out, **kw: seen.update(src=src, out=out, **kw))
    monkeypatch.chdir(tmp_path)
    assert main(["notebook", "run", "03", "--out", "mine", "-p", "output_dir", "res"]) == 0
    assert seen["cwd"] == str(tmp_path)  # a relative output_dir resolves in the user's folder, not the package's
    assert Path(seen["out"]) == tmp_path / "mine" / "03_main_table.ipynb"
    assert Path(seen["src"]).parent == NOTEBOOK_DIR and seen["parameters"] == {"output_dir": "res"}
