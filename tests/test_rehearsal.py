"""The rehearsal profile: the full profile's code paths (real architectures, random weights) on fake data in each
dataset's real layout, label encoding and image size, one image each; every number a pipeline check. The slow test
runs notebooks 03 and 04 through it on two datasets with one image each."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from alignclip.data import generate_fake_dataset, load_manifest, open_dataset
from alignclip.data.synthetic import synthetic_scene
from alignclip.errors import ConfigError
from alignclip.study import start_study
from alignclip.study.context import banner


def zlib_seed(name: str) -> int:
    import zlib

    return zlib.crc32(name.encode())  # the scene seed of seed 0 (alignclip.data.fakes)


def test_fake_data_at_a_real_non_square_size(tmp_path):
    root = generate_fake_dataset("vdd", tmp_path / "vdd", n_images=1, size=(300, 1100), seed=0)
    sample = open_dataset("vdd", root)[0]
    assert sample.image.shape == (300, 1100, 3) and sample.label.shape == (300, 1100)
    marker = json.loads((root / "alignclip_fake.json").read_text())
    assert marker["size"] == [300, 1100]
    assert len(set(np.unique(sample.label)) - {255}) >= 2  # several classes survive the crop


def test_scenes_larger_than_1024_are_drawn_at_1024_and_resized_up(tmp_path):
    root = generate_fake_dataset("potsdam", tmp_path / "p", n_images=1, size=(1500, 2048), seed=0)
    big = open_dataset("potsdam", root)[0]
    image, _ = synthetic_scene(zlib_seed("potsdam"), 0, 1024)
    assert big.image.shape == (1500, 2048, 3)
    assert np.abs(big.image[::2, ::2][:8, :8].astype(int) - image[:8, :8].astype(int)).max() <= 40  # same scene


def test_square_fakes_are_the_same_bytes_as_before(tmp_path):
    a = generate_fake_dataset("potsdam", tmp_path / "a", n_images=1, size=96, seed=0)
    b = generate_fake_dataset("potsdam", tmp_path / "b", n_images=1, size=(96, 96), seed=0)
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert files and all((a / f).read_bytes() == (b / f).read_bytes() for f in files)


def test_rehearsal_context_real_architectures_random_weights_real_sizes(tmp_path):
    ctx = start_study(profile="rehearsal", datasets=["vdd", "potsdam"], output_dir=tmp_path)
    assert ctx.is_pipeline_check and not ctx.is_smoke and ctx.kind == "pipeline-check"
    assert ctx.limit == 1  # a small limit by default
    cfg = ctx.config("alignclip-d", "vdd")
    assert (cfg.backbone, cfg.pretrained, cfg.upsampler, cfg.upsampler_ckpt) == ("ViT-B-16", "none", "jbu_one", "none")
    assert (cfg.vfm, cfg.vfm_pretrained) == ("dino_vitb16", "none")
    assert ctx.config("alignclip-s", "vdd").vfm == "sam_vitb"
    root = ctx.dataset_root("vdd")
    assert open_dataset("vdd", root)[0].image.shape[:2] == load_manifest("vdd").image_size  # 3000 x 4000
    assert ctx.dataset_root("vdd") == root  # generated once
    assert "rehearsal" in banner(ctx).data and "random weights" in banner(ctx).data
    with pytest.raises(ConfigError, match="profile"):
        start_study(profile="dress")


def test_run_all_rehearsal_flag_conflicts_in_one_line(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "alignclip.cli.main", "notebook", "run-all", "--rehearsal", "-p", "profile", "full"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "--rehearsal and -p profile full disagree" in out.stderr


@pytest.mark.slow
@pytest.mark.parametrize("notebook", ["03_main_table", "04_component_ablation"])
def test_notebook_passes_the_rehearsal(tmp_path, notebook):
    params = ["-p", "profile", "rehearsal", "-p", "datasets", "['potsdam', 'vdd']", "-p", "limit", "1"]
    if notebook == "03_main_table":
        params += ["-p", "methods", "['segearth-ov', 'alignclip-d', 'alignclip-s', 'proxyclip']"]
    run = subprocess.run(
        [sys.executable, "-m", "alignclip.cli.main", "notebook", "run", notebook, "--out", "out", *params],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "0"},
        timeout=3000,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    body = json.loads(next((tmp_path / "results").glob(f"{notebook}.json")).read_text())
    assert body["profile"] == "rehearsal" and body["kind"] == "pipeline-check"
    results = [json.loads(p.read_text()) for p in (tmp_path / "results" / "runs").rglob("*.json")]
    assert results and all(r["num_images"] == 1 and r["kind"] == "pipeline-check" for r in results)
    assert {r["provenance"]["config"]["backbone"] for r in results} == {"ViT-B-16"}
