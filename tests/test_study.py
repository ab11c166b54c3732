"""The study layer the notebooks call: parameter validation, cached runs, tables, claims."""

import pandas as pd
import pytest

from alignclip.cli.notebooks import run_notebook
from alignclip.errors import ConfigError, DatasetNotFoundError
from alignclip.study import (
    check_claims,
    evaluate_runs,
    grid_runs,
    main_table,
    paper_comparison,
    start_study,
    summary_lines,
)
from alignclip.study.notebooks import check_parameters, list_notebooks, notebook_path


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    return start_study(
        datasets=["potsdam", "loveda"],
        output_dir=tmp_path_factory.mktemp("study"),
        n_boot=200,
        smoke_images=2,
        smoke_size=64,
    )


@pytest.fixture(scope="module")
def results(ctx):
    return evaluate_runs(ctx, grid_runs(["segearth-ov", "alignclip-d"], ctx.datasets), progress=False)


def test_bad_parameters_one_line(tmp_path):
    with pytest.raises(ConfigError, match="profile"):
        start_study(profile="fast", output_dir=tmp_path)
    with pytest.raises(ConfigError, match="limit='many' has the wrong type"):
        start_study(limit="many", output_dir=tmp_path)
    with pytest.raises(ConfigError, match="unknown dataset"):
        start_study(datasets=["potsdamm"], output_dir=tmp_path)
    with pytest.raises(DatasetNotFoundError, match="data_root"):
        start_study(profile="full", output_dir=tmp_path)
    with pytest.raises(DatasetNotFoundError, match="alignclip data prepare potsdam"):
        start_study(profile="full", datasets=["potsdam"], data_root=tmp_path, output_dir=tmp_path)
    (tmp_path / "potsdam").mkdir()
    with pytest.raises(ConfigError, match="upsampler_ckpt"):
        start_study(profile="full", datasets=["potsdam"], data_root=tmp_path, output_dir=tmp_path)


def test_full_profile_checks_only_what_the_notebook_needs(tmp_path):
    from alignclip.study import banner

    # the cost benchmark with random weights: no data_root, no checkpoint
    ctx = start_study(profile="full", datasets=[], output_dir=tmp_path, needs=())
    assert ctx.needs == () and ctx.data_root is None and ctx.upsampler_ckpt is None
    assert "reads no dataset" in banner(ctx).data and "`None`" not in banner(ctx).data
    with pytest.raises(DatasetNotFoundError, match="needs data_root"):
        ctx.dataset_root("potsdam")  # a notebook that reads data anyway gets the same one-line error
    with pytest.raises(ConfigError, match="needs upsampler_ckpt"):
        ctx.config("segearth-ov", "potsdam")
    # weights only: data_root not required, upsampler_ckpt is
    ctx = start_study(profile="full", datasets=[], output_dir=tmp_path, needs=("weights",), upsampler_ckpt="none")
    assert ctx.needs == ("weights",) and ctx.data_root is None
    assert "Real pretrained weights" in banner(ctx).data and "reads no dataset" in banner(ctx).data
    with pytest.raises(ConfigError) as err:
        start_study(profile="full", datasets=["potsdam"], output_dir=tmp_path, needs=["weights"])
    msg = str(err.value)
    assert "\n" not in msg and "upsampler_ckpt" in msg and "-p upsampler_ckpt /path/to/" in msg
    # data only: upsampler_ckpt not required, data_root is
    (tmp_path / "potsdam").mkdir()
    ctx = start_study(profile="full", datasets=["potsdam"], data_root=tmp_path, output_dir=tmp_path, needs=["data"])
    assert ctx.needs == ("data",) and ctx.dataset_root("potsdam") == tmp_path / "potsdam"
    with pytest.raises(DatasetNotFoundError) as err:
        start_study(profile="full", datasets=["potsdam"], output_dir=tmp_path, needs=["data"])
    msg = str(err.value)
    assert "\n" not in msg and "data_root" in msg and "-p data_root /path/to/data" in msg
    # default: both (existing notebooks unchanged)
    with pytest.raises(DatasetNotFoundError, match="-p data_root"):
        start_study(profile="full", datasets=["potsdam"], output_dir=tmp_path)
    with pytest.raises(ConfigError, match="-p upsampler_ckpt"):
        start_study(profile="full", datasets=["potsdam"], data_root=tmp_path, output_dir=tmp_path)
    both = start_study(
        profile="full", datasets=["potsdam"], data_root=tmp_path, output_dir=tmp_path, upsampler_ckpt="none"
    )
    assert both.needs == ("data", "weights")
    assert f"datasets under `{tmp_path}`" in banner(both).data
    # the smoke profile needs nothing whatever is declared; unknown needs are named
    assert start_study(output_dir=tmp_path, datasets=["potsdam"], needs=("data", "weights")).is_pipeline_check
    with pytest.raises(ConfigError, match="unknown 'model'; choose from data, weights"):
        start_study(output_dir=tmp_path, needs=("model",))
    with pytest.raises(ConfigError, match="needs='data' has the wrong type"):
        start_study(output_dir=tmp_path, needs="data")


def test_unknown_preset_fails_before_any_run(ctx):
    from alignclip.study import Run

    with pytest.raises(ConfigError, match="unknown preset"):
        evaluate_runs(ctx, [Run("segearth-ov", "segearth-ov", "potsdam"), Run("x", "alignclip-x", "potsdam")])


def test_results_are_pipeline_checks(results):
    assert len(results) == 4
    assert set(results["kind"]) == {"pipeline-check"}
    assert (results["ci_low"] <= results["miou"] + 1e-9).all() and (results["miou"] <= results["ci_high"] + 1e-9).all()


def test_runs_are_cached(ctx, results):
    from pathlib import Path

    mtimes = {p: Path(p).stat().st_mtime_ns for p in results["path"]}
    again = evaluate_runs(ctx, grid_runs(["segearth-ov", "alignclip-d"], ctx.datasets), progress=False)
    assert again["miou"].tolist() == results["miou"].tolist()
    assert {p: Path(p).stat().st_mtime_ns for p in again["path"]} == mtimes
    assert summary_lines(again) == summary_lines(results)


def test_cached_runs_are_not_reused_for_changed_data(tmp_path):
    from alignclip.data import open_dataset
    from alignclip.evaluation.evaluate import load_result

    ctx = start_study(datasets=["potsdam"], output_dir=tmp_path, n_boot=50, smoke_images=2)
    runs = grid_runs(["segearth-ov"], ctx.datasets)
    path = evaluate_runs(ctx, runs, progress=False)["path"][0]
    before = load_result(path)["provenance"]["data_fingerprint"]
    label = open_dataset("potsdam", ctx.dataset_root("potsdam"))[0].label_path
    label.write_bytes(label.read_bytes() + b"\0")  # another version of the data (PNG readers ignore the tail)
    evaluate_runs(ctx, runs, progress=False)
    assert load_result(path)["provenance"]["data_fingerprint"] != before  # re-evaluated, not the cached result


def test_tables_and_claims(results):
    table = main_table(results)
    assert set(table[table["method"] == "GEM"]["status"]) == {"reported only"}
    ours = table[(table["method"] == "AlignCLIP-D") & (table["source"] == "ours")]
    assert len(ours) == 1 and ours["Potsdam"].notna().all() and ours["Avg"].isna().all()  # 2 of 8 datasets
    assert list(ours["status"]) == ["pipeline-check"]  # the run's kind on our row, never on the paper's
    assert set(table[(table["method"] == "AlignCLIP-D") & (table["source"] == "paper")]["status"]) == {"published"}
    cmp = paper_comparison(results, "table2_main", {"alignclip-d": "AlignCLIP-D"})
    assert set(cmp["kind"]) == {"pipeline-check"}
    # presets find their paper row through alignclip.paper.names (no map written by the caller)
    pd.testing.assert_frame_equal(paper_comparison(results, "table2_main", ["alignclip-d"]), cmp)
    claims = check_claims(results, [("segearth-ov", "alignclip-d")], n_boot=100)
    assert set(claims["verdict"]) == {"pipeline-check"} and len(claims) == 2


def test_notebook_parameters_checked():
    assert "03_main_table" in list_notebooks()
    path = notebook_path("03")
    assert check_parameters(path, {"limit": "5", "datasets": "['potsdam']"}) == {"limit": 5, "datasets": ["potsdam"]}
    with pytest.raises(ConfigError, match="unknown parameter"):
        check_parameters(path, {"profle": "full"})
    with pytest.raises(ConfigError, match="wrong type"):
        check_parameters(path, {"limit": "many"})
    with pytest.raises(ConfigError, match="unknown notebook"):
        notebook_path("99_nothing")


def test_papermill_sees_every_parameter():
    """``papermill --help-notebook`` and its unknown-parameter warning skip any line with two '=': keep '=' out of
    the parameter comments (a default value that needs one, a bench spec like ``PRESET:vfm=sam_vitb``, is exempt)."""
    import re

    import nbformat
    from papermill.translators import PythonTranslator

    for name in list_notebooks():
        nb = nbformat.read(notebook_path(name), as_version=4)
        cell = next(c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", []))
        seen = {p.name for p in PythonTranslator.inspect(cell)}
        for line in cell.source.splitlines():
            target = re.match(r"^(\w+)\s*:", line)
            value = line.split("#", 1)[0].split("=", 1)[-1]
            if target and "=" not in value:
                assert target.group(1) in seen, f"{name}: papermill cannot parse {line!r}"


def test_run_notebook_never_overwrites_committed(tmp_path):
    from alignclip.errors import InputError
    from alignclip.study.notebooks import NOTEBOOK_DIR

    with pytest.raises(InputError, match="overwrite the committed notebook"):
        run_notebook("03", {}, NOTEBOOK_DIR)
