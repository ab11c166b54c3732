"""The study as jobs (alignclip.study.jobs), its cost plan (alignclip.study.plan) and their commands: jobs listed
from the notebooks' parameters and deduplicated, shards in two processes filling exactly the cache one process
fills, a notebook rendered from that cache alone, the plan's arithmetic, and bad inputs in one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from alignclip.errors import ConfigError, InputError
from alignclip.study.jobs import (
    Job,
    list_jobs,
    notebook_jobs,
    parse_shard,
    read_jobs,
    shard_jobs,
    write_jobs,
)
from alignclip.study.plan import bench_times, plan_frame, plan_table, windows_per_image

REPO = Path(__file__).resolve().parents[1]
SMALL = {"datasets": "['vdd']", "methods": "['segearth-ov', 'clip']"}  # notebook 03's and 04's, one dataset


def _cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "alignclip.cli.main", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "0", **(env or {})},
        timeout=900,
    )


# ---------------------------------------------------------------- listing
def test_jobs_follow_the_notebook_parameters_and_are_shared_across_notebooks():
    jobs = list_jobs(["03", "04"], SMALL)
    by_preset = {j.preset: j for j in jobs}
    assert sorted(by_preset) == ["alignclip-d", "clip", "segearth-ov", "segearth-ov+cce", "segearth-ov+sga"]
    shared = by_preset["segearth-ov"]  # Table 2's and Table 3's SegEarth-OV row: one evaluation, two readers
    assert shared.notebooks == ("03_main_table", "04_component_ablation") and shared.dataset == "vdd"
    assert by_preset["clip"].notebooks == ("03_main_table",)
    assert len({j.key for j in jobs}) == len(jobs) == 5
    assert all(j.images == 3 and j.context["profile"] == "smoke" for j in jobs)  # the smoke profile's 3 images
    assert shared.results == (f"runs/segearth-ov/vdd-{shared.fingerprint}.json",)


def test_every_evaluating_notebook_lists_jobs_and_the_others_none():
    assert notebook_jobs("00") == [] and notebook_jobs("09_compute_cost") == []
    crf = notebook_jobs("10", {"datasets": "['vdd']"})
    assert [(j.kind, j.preset, len(j.results)) for j in crf] == [("crf", "alignclip-d", 2)]
    params = {"datasets": "['vdd']", "variants": "['alignclip-d']"}
    assert len(notebook_jobs("05", params)) == 15  # 3 sweeps of 5 values, each holding Table 6's default point
    sweep = list_jobs(["05"], params)
    assert len(sweep) == 13 and len({j.fingerprint for j in sweep}) == 13  # the default point evaluated once
    assert sum(j.overrides == {} for j in sweep) == 1


def test_unknown_parameter_and_shard_errors_are_one_line():
    with pytest.raises(ConfigError, match="declared by none"):
        list_jobs(["03"], {"no_such": "1"})
    for bad in ("0/2", "3/2", "x", "1/0"):
        with pytest.raises(ConfigError, match="--shard"):
            parse_shard(bad)
    assert parse_shard("2/3") == (2, 3)


def test_shards_partition_the_jobs():
    jobs = list_jobs(["03", "04"], SMALL)
    parts = [shard_jobs(jobs, i, 3) for i in (1, 2, 3)]
    assert sorted(j.key for p in parts for j in p) == sorted(j.key for j in jobs)
    assert [len(p) for p in parts] == [2, 2, 1]


def test_jobs_file_round_trip_refusals_and_malformed_lines(tmp_path):
    jobs = list_jobs(["03"], SMALL)
    path = write_jobs(jobs, tmp_path / "jobs.jsonl")
    assert read_jobs(path) == jobs
    with pytest.raises(InputError, match="exists"):
        write_jobs(jobs, path)
    write_jobs(jobs[:1], path, force=True)
    assert len(read_jobs(path)) == 1
    path.write_text('{"format": "other"}\n')
    with pytest.raises(InputError, match="line 1 is not a job"):
        read_jobs(path)
    with pytest.raises(InputError, match="not found"):
        read_jobs(tmp_path / "none.jsonl")


def test_a_job_listed_under_other_code_is_refused_before_any_work(tmp_path):
    from alignclip.study.jobs import run_jobs

    (job,) = list_jobs(["03"], {"datasets": "['vdd']", "methods": "['clip']"})
    stale = Job(**{**job.__dict__, "fingerprint": "0" * 16})
    with pytest.raises(ConfigError, match="1 of 1 jobs were listed under other code"):
        run_jobs([stale], progress=False)


# ---------------------------------------------------------------- shards, cache and rendering (processes)
def _cache(root: Path) -> dict[str, dict]:
    """Every RESULT.json under root/results/runs by relative path, less what only says when and where it ran."""
    out = {}
    for path in sorted((root / "results" / "runs").rglob("*.json")):
        body = json.loads(path.read_text())
        prov = body.pop("provenance")
        body["fingerprint"] = prov["fingerprint"]
        body["config"] = prov["config"]
        out[str(path.relative_to(root))] = body
    return out


def test_two_shards_in_two_processes_fill_the_cache_one_process_fills(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    for d in (one, two):
        d.mkdir()
    args = ["study", "jobs", "03", "04", "-p", "datasets", SMALL["datasets"], "-p", "methods", SMALL["methods"]]
    listed = _cli(*args, "--out", "jobs.jsonl", cwd=one)
    assert listed.returncode == 0, listed.stderr
    (two / "jobs.jsonl").write_text((one / "jobs.jsonl").read_text())
    single = _cli("study", "run-jobs", "jobs.jsonl", "--no-progress", cwd=one)
    assert single.returncode == 0 and "5 done" in single.stdout, single.stderr
    shards = [
        subprocess.Popen(
            [sys.executable, "-m", "alignclip.cli.main", "study", "run-jobs", "jobs.jsonl", "--shard", f"{i}/2"],
            cwd=two,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONHASHSEED": "0"},
        )
        for i in (1, 2)
    ]
    outs = [p.communicate(timeout=900) for p in shards]
    assert [p.returncode for p in shards] == [0, 0], outs
    assert "3 done" in outs[0][0] and "2 done" in outs[1][0]
    assert _cache(one) == _cache(two) and len(_cache(one)) == 5
    again = _cli("study", "run-jobs", "jobs.jsonl", "--shard", "1/2", "--no-progress", cwd=two)
    assert "0 done, 3 skipped" in again.stdout, again.stderr


@pytest.mark.slow
def test_a_notebook_renders_from_the_jobs_cache_alone(tmp_path):
    """Notebook 03 after its jobs ran, with ALIGNCLIP_CACHE_ONLY=1: it evaluates nothing and completes (a run the
    jobs did not list would fail); a notebook without its jobs fails in one line."""
    params = ["-p", "datasets", SMALL["datasets"], "-p", "methods", SMALL["methods"]]
    assert _cli("study", "jobs", "03", *params, "--out", "jobs.jsonl", cwd=tmp_path).returncode == 0
    assert _cli("study", "run-jobs", "jobs.jsonl", "--no-progress", cwd=tmp_path).returncode == 0
    before = _cache(tmp_path)
    rendered = _cli("notebook", "run-all", "--cache-only", "--out", "rendered", *params, cwd=tmp_path)
    assert rendered.returncode != 0  # run-all renders every notebook: 04's runs were not listed
    assert "ALIGNCLIP_CACHE_ONLY=1 forbids evaluating" in rendered.stderr + rendered.stdout
    one = _cli("notebook", "run", "03", "--out", "rendered", *params, cwd=tmp_path, env={"ALIGNCLIP_CACHE_ONLY": "1"})
    assert one.returncode == 0, one.stderr[-2000:]
    assert _cache(tmp_path) == before  # read, not recomputed


# ---------------------------------------------------------------- the plan
def test_windows_per_image_by_hand():
    assert windows_per_image((448, 448), 448, 224, 112) == 9
    assert windows_per_image((512, 512), 448, 224, 112) == 9  # resized to 448 first
    assert windows_per_image((3000, 4000), 448, 224, 112) == 6  # 336 x 448: 2 x 3 windows
    assert windows_per_image((200, 100), None, 224, 112) == 1  # smaller than a window: one (padded)


def test_plan_arithmetic_with_a_given_bench():
    bench = {
        "presets": [
            {"preset": "segearth-ov", "ms_per_image": 900.0, "n_windows": 9},
            {"preset": "alignclip-d", "ms_per_image": 1800.0, "n_windows": 9},
            {"preset": "segearth-ov+cce:vfm=sam_vitb", "ms_per_image": 1.0, "n_windows": 9},
        ],
        "environment": {"device_name": "test device"},
    }
    times, source = bench_times(bench)
    assert times == {"segearth-ov": 100.0, "alignclip-d": 200.0} and "test device" in source
    jobs = list_jobs(["03"], {"profile": "full", "upsampler_ckpt": "none", "methods": "['alignclip-d', 'clip']"})
    frame = plan_frame(jobs, bench, check_cache=False)
    pots = frame[(frame["dataset"] == "potsdam") & (frame["preset"] == "alignclip-d")].iloc[0]
    assert pots["images"] == 2016 and pots["windows"] == 9 and pots["basis"] == "measured"
    assert pots["hours"] == pytest.approx(2016 * 9 * 200.0 / 3.6e6)
    clip = frame[frame["preset"] == "clip"]
    assert set(clip["basis"]) == {"as segearth-ov"}
    vdd = frame[(frame["dataset"] == "vdd") & (frame["preset"] == "clip")].iloc[0]
    assert vdd["images"] == 40 and bool(vdd["images_estimated"]) and vdd["windows"] == 6
    table = plan_table(frame)
    total = table[table["Notebook"] == "Total"].iloc[0]
    assert total["Device-hours"] == pytest.approx(frame["hours"].sum())
    assert total["Evaluations"] == 16 and table.attrs["estimated_datasets"] == ["openearthmap", "uavid", "udd5", "vdd"]


def test_paper_bench_uses_table_11():
    times, source = bench_times("paper")
    assert times["segearth-ov"] == pytest.approx(12 / 9) and times["trident"] == pytest.approx(89 / 9)
    assert "Table 11" in source


def test_plan_command_and_its_errors(tmp_path):
    ok = _cli("study", "plan", "03", "--bench", "paper", "--json", "plan.json", cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert "Total" in ok.stdout and "Table 11" in ok.stdout
    body = json.loads((tmp_path / "plan.json").read_text())
    assert body["notebooks"][-1]["Notebook"] == "Total"
    gpu = _cli("study", "plan", "03", "--device", "cuda", cwd=tmp_path)
    assert gpu.returncode != 0 and "alignclip bench --device cuda" in gpu.stderr
    assert len(gpu.stderr.strip().splitlines()) == 1
    (tmp_path / "bad.json").write_text("{}")
    bad = _cli("study", "plan", "03", "--bench", "bad.json", cwd=tmp_path)
    assert bad.returncode != 0 and "is not an alignclip bench result" in bad.stderr
