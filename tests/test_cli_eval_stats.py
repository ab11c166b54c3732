"""`alignclip evaluate`, `data` and `stats` commands end to end on generated data."""

import json
import re

import pytest

from alignclip.cli.main import main
from alignclip.data import generate_synthetic_dataset
from alignclip.kinds import PIPELINE_CHECK_LABEL


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cli")
    root = generate_synthetic_dataset(tmp / "synth", n_images=4, size=64, seed=1)
    outs = {}
    for preset in ("segearth-ov", "segearth-ov+sga"):
        out = tmp / f"{preset}.json"
        assert (
            main(
                [
                    "evaluate",
                    "--dataset",
                    "synthetic",
                    "--data-root",
                    str(root),
                    "--out",
                    str(out),
                    "--preset",
                    preset,
                    "--smoke",
                    "--set",
                    "long_side=64",
                    "--no-progress",
                ]
            )
            == 0
        )
        outs[preset] = out
    outs["root"] = root
    return outs


def test_evaluate_prints_pipeline_check(results, capsys):
    out = results["segearth-ov"]
    data = json.loads(out.read_text())
    assert data["kind"] == "pipeline-check" and data["num_images"] == 4
    # rerun without --force is refused in one line
    rc = main(
        [
            "evaluate",
            "--dataset",
            "synthetic",
            "--data-root",
            str(results["root"]),
            "--out",
            str(out),
            "--smoke",
            "--no-progress",
        ]
    )
    assert rc == 2 and "--force" in capsys.readouterr().err


def test_stats_ci_and_compare(results, capsys):
    assert main(["stats", "ci", str(results["segearth-ov"]), "--n-boot", "200", "--json"]) == 0
    text = capsys.readouterr().out
    assert "95% CI" in text and PIPELINE_CHECK_LABEL in text
    assert json.loads(text.strip().splitlines()[-1])["n_boot"] == 200
    assert (
        main(["stats", "compare", str(results["segearth-ov"]), str(results["segearth-ov+sga"]), "--n-boot", "200"]) == 0
    )
    assert "B better in" in capsys.readouterr().out


def test_stats_compare_refuses_different_images(results, tmp_path, capsys):
    data = json.loads(results["segearth-ov"].read_text())
    data["per_image_confusion"]["ids"] = [f"other_{i}" for i in range(len(data["per_image_confusion"]["ids"]))]
    other = tmp_path / "other.json"
    other.write_text(json.dumps(data))
    assert main(["stats", "compare", str(results["segearth-ov"]), str(other)]) == 2
    assert "same images" in capsys.readouterr().err


def test_data_commands(results, tmp_path, capsys):
    assert main(["data", "list"]) == 0
    assert "potsdam" in capsys.readouterr().out
    # 4 generated images where the manifest expects 8: one problem line, exit 1
    assert main(["data", "verify", "synthetic", "--root", str(results["root"])]) == 1
    assert "4 images found" in capsys.readouterr().out
    assert main(["data", "verify", "potsdam", "--root", str(tmp_path / "none")]) == 1
    out = capsys.readouterr().out
    assert "potsdam.yaml" in out and "alignclip data prepare potsdam" in out
    full = generate_synthetic_dataset(tmp_path / "s8", n_images=8, size=64)
    assert main(["data", "verify", "synthetic", "--root", str(full)]) == 0
    assert re.search(r": OK \(content sha256 [0-9a-f]{64}\)", capsys.readouterr().out)  # recordable beside results
