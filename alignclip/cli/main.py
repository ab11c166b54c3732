"""Command-line interface: ``alignclip segment | evaluate | data | stats | bench | notebook``.

Errors raised on purpose (:class:`alignclip.errors.AlignCLIPError`) are printed as one line ``error: ...`` with
exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from alignclip.cli.args import (
    PIPELINE_CHECK_NOTE,
    add_model_args,
    config_from_args,
    read_class_args,
)
from alignclip.cli.bench import register_bench
from alignclip.errors import AlignCLIPError
from alignclip.kinds import PIPELINE_CHECK_LABEL, REPRODUCTION, is_reproduction

__all__ = ["build_parser", "cmd_data", "cmd_evaluate", "cmd_notebook", "cmd_segment", "cmd_stats", "main"]


def cmd_segment(args: argparse.Namespace) -> int:
    from alignclip.io.images import read_image, write_mask
    from alignclip.io.overlay import write_overlay
    from alignclip.pipeline.segmentor import Segmentor

    classes = read_class_args(args)
    config = config_from_args(args)
    image, meta = read_image(args.image, bands=tuple(args.bands) if args.bands else None)
    seg = Segmentor(config, classes)
    if seg.is_random:
        print(PIPELINE_CHECK_NOTE.format(what=json.dumps(seg.weights_identity())), file=sys.stderr)
    labels = seg.predict(image, keep_logits=False).labels  # only labels are written: bounded memory on huge tiles
    if args.out:
        write_mask(args.out, labels, meta=meta, overwrite=args.force)
        print(f"mask written to {args.out} ({labels.shape[1]}x{labels.shape[0]}, classes 0..{len(classes) - 1})")
    if args.overlay:
        write_overlay(args.overlay, image, labels, seg.classes.class_names, overwrite=args.force)
        print(f"overlay written to {args.overlay}")
    if not args.out and not args.overlay:
        values, counts_ = np.unique(labels, return_counts=True)
        counts = {seg.classes.class_names[int(k)]: int(v) for k, v in zip(values, counts_, strict=True)}
        print(json.dumps({"pixels_per_class": counts}, indent=1))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alignclip", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("segment", help="segment one image with any class names")
    p.add_argument("image", help="PNG, JPEG, BMP or (Geo)TIFF")
    cls = p.add_mutually_exclusive_group(required=True)
    cls.add_argument("--classes", nargs="+", metavar="NAME", help="one class per argument; synonyms with commas")
    cls.add_argument("--classes-file", help="text file, one class per line; synonyms with commas")
    p.add_argument(
        "--bands", nargs=3, type=int, metavar=("R", "G", "B"), help="1-based RGB bands of a multi-band image"
    )
    p.add_argument("--out", help="mask PNG (single-channel class indices) or .tif (GeoTIFF keeps georeferencing)")
    p.add_argument("--overlay", help="colour overlay PNG with a legend")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    add_model_args(p)
    p.set_defaults(func=cmd_segment)

    for register in (_register_evaluate, _register_data, _register_stats, _register_notebook, register_bench):
        register(sub)
    return parser


def cmd_evaluate(args: argparse.Namespace) -> int:
    from alignclip.evaluation.evaluate import evaluate

    config = config_from_args(args, dataset=args.dataset)
    result = evaluate(
        config,
        args.dataset,
        args.data_root,
        args.out,
        split=args.split,
        limit=args.limit,
        save_predictions=args.save_predictions,
        force=args.force,
        progress=not args.no_progress,
    )
    if result is None:  # non-zero ranks of a torchrun job
        return 0
    label = REPRODUCTION if result["kind"] == REPRODUCTION else f"{PIPELINE_CHECK_LABEL}, not a reproduction"
    print(
        f"{args.dataset}: mIoU {result['miou']:.2f}  aAcc {result['aacc']:.2f}  mAcc {result['macc']:.2f}  "
        f"({result['num_images']} images) [{label}] -> {args.out}"
    )
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from alignclip.data import list_datasets, load_manifest, prepare_dataset, verify_dataset

    if args.data_command == "list":
        for name in list_datasets():
            m = load_manifest(name)
            print(
                f"{name:18s} {m.display_name:22s} split={m.split:10s} classes={m.num_classes:3d} "
                f"images={m.num_eval_images if m.num_eval_images is not None else '?'}"
            )
        return 0
    if args.data_command == "prepare":
        print(prepare_dataset(args.name, Path(args.raw) if args.raw else None, Path(args.out), force=args.force))
        return 0
    problems = verify_dataset(args.name, args.root, split=args.split)
    if problems:
        for line in problems:
            print(f"problem: {line}")
        return 1
    print(f"{args.name} at {args.root}: OK")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from alignclip.evaluation.bootstrap import bootstrap_miou, paired_bootstrap
    from alignclip.evaluation.confusion import ConfusionAccumulator
    from alignclip.evaluation.evaluate import load_result

    def per_image(path: str):
        result = load_result(path)
        acc = ConfusionAccumulator.from_compact(result["per_image_confusion"])
        ids, cms = acc.per_image()
        return result, ids, cms

    if args.stats_command == "ci":
        result, _, cms = per_image(args.result)
        ci = bootstrap_miou(cms, n_boot=args.n_boot, seed=args.seed)
        tag = "" if is_reproduction(result["kind"]) else f" [{PIPELINE_CHECK_LABEL}]"
        print(
            f"mIoU {ci['miou']:.2f} (bootstrap mean {ci['mean']:.2f}), 95% CI [{ci['ci_low']:.2f}, "
            f"{ci['ci_high']:.2f}], {ci['n_images']} images, {ci['n_boot']} resamples, seed {ci['seed']}{tag}"
        )
        if args.json:
            print(json.dumps(ci))
        return 0
    res_a, ids_a, cms_a = per_image(args.a)
    res_b, ids_b, cms_b = per_image(args.b)
    cmp = paired_bootstrap(cms_a, cms_b, ids_a, ids_b, n_boot=args.n_boot, seed=args.seed)
    tag = "" if is_reproduction([res_a["kind"], res_b["kind"]]) else f" [{PIPELINE_CHECK_LABEL}]"
    print(
        f"mIoU B - A = {cmp['delta']:+.2f}, 95% CI [{cmp['ci_low']:+.2f}, {cmp['ci_high']:+.2f}], "
        f"B better in {100 * cmp['p_b_better']:.1f}% of {cmp['n_boot']} paired resamples, "
        f"{cmp['n_images']} images{tag}"
    )
    if args.json:
        print(json.dumps(cmp))
    return 0


def _register_evaluate(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a method on a dataset (mIoU, RESULT.json)")
    p.add_argument("--dataset", required=True, help="dataset manifest name (alignclip data list)")
    p.add_argument("--data-root", required=True, help="converted dataset root (img_dir/, ann_dir/)")
    p.add_argument("--split", help="split to evaluate (default: the manifest's)")
    p.add_argument("--limit", type=int, help="only the first N images")
    p.add_argument("--save-predictions", metavar="DIR", help="write one mask PNG per image")
    p.add_argument("--out", required=True, help="RESULT.json path")
    p.add_argument("--force", action="store_true", help="overwrite --out and discard partial results")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_model_args(p)
    p.set_defaults(func=cmd_evaluate)


def _register_data(sub) -> None:
    p = sub.add_parser("data", help="dataset manifests, conversion and verification")
    dsub = p.add_subparsers(dest="data_command", required=True)
    dsub.add_parser("list", help="list the dataset manifests").set_defaults(func=cmd_data)
    pp = dsub.add_parser("prepare", help="convert raw downloads into the evaluation layout")
    pp.add_argument("name")
    pp.add_argument("--raw", help="folder with the raw downloads (not needed for synthetic)")
    pp.add_argument("--out", required=True)
    pp.add_argument("--force", action="store_true")
    pp.set_defaults(func=cmd_data)
    pv = dsub.add_parser("verify", help="check counts, sizes and label values against the manifest")
    pv.add_argument("name")
    pv.add_argument("--root", required=True)
    pv.add_argument("--split")
    pv.set_defaults(func=cmd_data)


def _register_stats(sub) -> None:
    p = sub.add_parser("stats", help="bootstrap confidence intervals and paired comparisons of RESULT.json files")
    ssub = p.add_subparsers(dest="stats_command", required=True)
    pc = ssub.add_parser("ci", help="percentile bootstrap over images of the mIoU")
    pc.add_argument("result")
    pm = ssub.add_parser("compare", help="paired bootstrap of mIoU(B) - mIoU(A) on the same images")
    pm.add_argument("a")
    pm.add_argument("b")
    for q in (pc, pm):
        q.add_argument("--n-boot", type=int, default=1000)
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--json", action="store_true", help="also print the numbers as JSON")
        q.set_defaults(func=cmd_stats)


def cmd_notebook(args: argparse.Namespace) -> int:
    from alignclip.cli.notebooks import (
        list_notebooks,
        notebook_parameters,
        notebook_path,
        run_all,
        run_notebook,
    )

    params = {k: v for k, v in (args.param or [])} if hasattr(args, "param") else {}
    if args.nb_command == "list":
        for name in list_notebooks():
            declared = notebook_parameters(notebook_path(name))
            print(f"{name}: " + ", ".join(f"{k}={v[1]!r}" for k, v in declared.items()))
        return 0
    if args.nb_command == "run":
        out = run_notebook(args.name, params, args.out)
        print(f"executed notebook written to {out}")
        return 0
    for path in run_all(args.out, params=params):
        print(f"executed notebook written to {path}")
    return 0


def _register_notebook(sub) -> None:
    p = sub.add_parser("notebook", help="rerun study notebooks with new parameters (papermill)")
    nsub = p.add_subparsers(dest="nb_command", required=True)
    nsub.add_parser("list", help="notebooks and their parameters").set_defaults(func=cmd_notebook)
    pr = nsub.add_parser("run", help="execute one notebook into --out (the committed notebook is untouched)")
    pr.add_argument("name", help="e.g. 03_main_table or 03")
    pa = nsub.add_parser("run-all", help="execute every notebook into --out (the book's main job)")
    for q in (pr, pa):
        q.add_argument(
            "-p",
            "--param",
            nargs=2,
            action="append",
            metavar=("KEY", "VALUE"),
            help="notebook parameter (repeatable), e.g. -p profile full -p datasets \"['potsdam']\"",
        )
        q.add_argument("--out", default="runs/notebooks", help="output folder (default runs/notebooks)")
        q.set_defaults(func=cmd_notebook)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except AlignCLIPError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
