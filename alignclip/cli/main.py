"""Command-line interface: ``alignclip segment | evaluate | data | stats | bench | notebook | study``.

Errors raised on purpose (:class:`alignclip.errors.AlignCLIPError`) are printed as one line ``error: ...`` with
exit status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from alignclip.cli.args import (
    PIPELINE_CHECK_NOTE,
    add_model_args,
    add_notebook_params,
    config_from_args,
    notebook_params,
    read_class_args,
)
from alignclip.cli.bench import register_bench
from alignclip.cli.study import register_study
from alignclip.errors import AlignCLIPError
from alignclip.kinds import PIPELINE_CHECK_LABEL, REPRODUCTION, is_reproduction

__all__ = ["build_parser", "cmd_data", "cmd_evaluate", "cmd_notebook", "cmd_segment", "cmd_stats", "main"]


def cmd_segment(args: argparse.Namespace) -> int:
    """Every input and output is checked (one-line errors) before any model is built; outputs are written atomically."""
    from alignclip.cli.segment_many import is_batch
    from alignclip.errors import InputError
    from alignclip.io.images import check_mask_path, read_image, write_mask
    from alignclip.io.overlay import check_overlay_path, write_overlay
    from alignclip.pipeline.runtime import check_image_size, resolve_device
    from alignclip.pipeline.segmentor import Segmentor

    classes = read_class_args(args)
    config = config_from_args(args)
    resolve_device(config.device)  # an unknown or missing device fails here, not after the models are built
    if is_batch(args.inputs, args.out_dir):
        return _segment_many(args, classes, config)
    if args.overlays:
        raise InputError("--overlays goes with --out-dir; for one image give --overlay PATH")
    args.image = args.inputs[0]
    outputs = []
    if args.out:
        outputs.append(check_mask_path(args.out, len(classes), overwrite=args.force, name="--out"))
    if args.overlay:
        outputs.append(check_overlay_path(args.overlay, overwrite=args.force, name="--overlay"))
    if len(outputs) == 2 and outputs[0].resolve() == outputs[1].resolve():
        raise InputError(f"--out and --overlay are the same file {args.out}; give them different paths")
    image, meta = read_image(args.image, bands=tuple(args.bands) if args.bands else None)
    check_image_size(config, image.shape[0], image.shape[1])  # too thin for the windows: before the models
    seg = Segmentor(config, classes)
    if seg.is_random:
        print(PIPELINE_CHECK_NOTE.format(what=json.dumps(seg.weights_identity())), file=sys.stderr)
    start = time.perf_counter()
    labels = seg.predict(image, keep_logits=False).labels  # only labels are written: bounded memory on huge tiles
    b = seg.build_seconds
    print(
        f"models {b['models']:.1f} s, text {b['text']:.1f} s, segmentation {time.perf_counter() - start:.1f} s",
        file=sys.stderr,
    )

    def write(path: str, save) -> None:
        try:
            save()
        except OSError as err:  # the disk filled up or the folder changed during the run
            raise InputError(f"cannot write {path}: {err.strerror or err}") from None

    if args.out:
        write(args.out, lambda: write_mask(args.out, labels, meta=meta, overwrite=args.force))
        print(f"mask written to {args.out} ({labels.shape[1]}x{labels.shape[0]}, classes 0..{len(classes) - 1})")
    if args.overlay:
        write(
            args.overlay,
            lambda: write_overlay(args.overlay, image, labels, seg.classes.class_names, overwrite=args.force),
        )
        print(f"overlay written to {args.overlay}")
    if not args.out and not args.overlay:
        values, counts_ = np.unique(labels, return_counts=True)
        counts = {seg.classes.class_names[int(k)]: int(v) for k, v in zip(values, counts_, strict=True)}
        print(json.dumps({"pixels_per_class": counts}, indent=1))
    return 0


def _segment_many(args: argparse.Namespace, classes: list[str], config) -> int:
    """``alignclip segment A B DIR 'GLOB*' --out-dir OUT``: exit status 0, or 1 when an image failed."""
    from alignclip.cli.segment_many import collect_inputs, plan_jobs, run_jobs
    from alignclip.errors import InputError
    from alignclip.io.images import MASK_MAX_CLASSES, read_image, write_mask
    from alignclip.io.overlay import write_overlay
    from alignclip.pipeline.segmentor import Segmentor

    if args.out or args.overlay:
        raise InputError("several images write into --out-dir (and --overlays); --out and --overlay name one file")
    if not args.out_dir:
        raise InputError("several images need --out-dir DIR (one mask per input, named after it)")
    if len(classes) > MASK_MAX_CLASSES:
        raise InputError(f"{len(classes)} classes do not fit a mask (uint8 ids); use at most {MASK_MAX_CLASSES}")
    jobs = plan_jobs(collect_inputs(args.inputs), args.out_dir, args.overlays)
    seg = Segmentor(config, classes)
    if seg.is_random:
        print(PIPELINE_CHECK_NOTE.format(what=json.dumps(seg.weights_identity())), file=sys.stderr)
    print(f"models {seg.build_seconds['models']:.1f} s, text {seg.build_seconds['text']:.1f} s", file=sys.stderr)
    bands = tuple(args.bands) if args.bands else None
    summary = run_jobs(
        jobs,
        segment=lambda image: seg.predict(image, keep_logits=False).labels,
        read=lambda path: read_image(path, bands=bands),
        write_mask=lambda job, labels, meta: write_mask(job.mask, labels, meta=meta, overwrite=args.force),
        write_overlay=lambda job, image, labels: write_overlay(
            job.overlay, image, labels, seg.classes.class_names, overwrite=args.force
        ),
        force=args.force,
    )
    print(f"{summary.line()}; masks in {args.out_dir}")
    return 1 if summary.failed else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alignclip", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("segment", help="segment images with any class names")
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="IMAGE",
        help="PNG, JPEG, BMP or (Geo)TIFF files; several files, folders (their images) or quoted globs "
        "segment many images into --out-dir",
    )
    cls = p.add_mutually_exclusive_group(required=True)
    cls.add_argument("--classes", nargs="+", metavar="NAME", help="one class per argument; synonyms with commas")
    cls.add_argument("--classes-file", help="text file, one class per line; synonyms with commas")
    p.add_argument(
        "--bands", nargs=3, type=int, metavar=("R", "G", "B"), help="1-based RGB bands of a multi-band image"
    )
    p.add_argument(
        "--out",
        help="mask .png (single-channel class indices, at most 256 classes) or .tif/.tiff (GeoTIFF keeps "
        "georeferencing); its folder must exist",
    )
    p.add_argument("--overlay", help="colour overlay .png with a legend; its folder must exist")
    p.add_argument(
        "--out-dir",
        help="many images: one mask per input, OUT_DIR/<name>.png (.tif for a TIFF input, georeferenced); "
        "existing masks are skipped unless --force",
    )
    p.add_argument("--overlays", action="store_true", help="with --out-dir: also OUT_DIR/<name>_overlay.png")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    add_model_args(p)
    p.set_defaults(func=cmd_segment)

    for register in (
        _register_evaluate,
        _register_data,
        _register_stats,
        _register_notebook,
        register_bench,
        register_study,
    ):
        register(sub)
    return parser


def cmd_evaluate(args: argparse.Namespace) -> int:
    import os
    import shlex

    from alignclip.evaluation.evaluate import EvaluationInterrupted, evaluate

    def resume_command() -> str:
        """This command with its options as given, without --force (which would discard the saved images)."""
        probe = argparse.ArgumentParser(add_help=False).add_subparsers()
        _register_evaluate(probe)
        defaults = probe.choices["evaluate"]
        words = ["alignclip", "evaluate"]
        for dest, value in vars(args).items():
            if dest in ("func", "command", "force") or value == defaults.get_default(dest):
                continue
            flag = "--" + dest.replace("_", "-")
            if value is True:
                words.append(flag)
            else:
                for item in value if isinstance(value, list) else [value]:
                    words += [flag, str(item)]
        launcher = "the same torchrun launch of " if int(os.environ.get("WORLD_SIZE", "1")) > 1 else ""
        return launcher + shlex.join(words)

    try:
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
            allow_partial=args.allow_partial,
        )
    except EvaluationInterrupted as exc:
        how = f" by {exc.signal_name}" if exc.signal_name else ""
        where = ", ".join(str(p) for p in exc.partial_dirs)
        print(
            f"interrupted{how}: {exc.saved} of {exc.total} images saved in {where}; resume with: {resume_command()}",
            file=sys.stderr,
        )
        return 143 if exc.signal_name == "SIGTERM" else 130
    except KeyboardInterrupt:
        print(f"interrupted; rerun to continue: {resume_command()}", file=sys.stderr)
        return 130
    if result is None:  # non-zero ranks of a torchrun job
        return 0
    label = REPRODUCTION if result["kind"] == REPRODUCTION else f"{PIPELINE_CHECK_LABEL}, not a reproduction"
    print(
        f"{args.dataset}: mIoU {result['miou']:.2f}  aAcc {result['aacc']:.2f}  mAcc {result['macc']:.2f}  "
        f"({result['num_images']} images) [{label}] -> {args.out}"
    )
    return 0


def cmd_data(args: argparse.Namespace) -> int:
    from alignclip.data import full_dataset_hash, list_datasets, load_manifest, prepare_dataset, verify_dataset

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
    digest = full_dataset_hash(args.name, args.root, split=args.split)
    print(f"{args.name} at {args.root}: OK (content sha256 {digest})")
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    from alignclip.errors import InputError
    from alignclip.evaluation.bootstrap import bootstrap_miou, check_comparable, paired_bootstrap
    from alignclip.evaluation.confusion import ConfusionAccumulator
    from alignclip.evaluation.evaluate import load_result

    def per_image(path: str):
        result = load_result(path)
        try:
            acc = ConfusionAccumulator.from_compact(result.get("per_image_confusion"))
        except InputError as exc:
            raise InputError(
                f"{path} has no usable per_image_confusion ({exc}); re-create it with `alignclip evaluate`"
            ) from None
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
    check_comparable(res_a, res_b, (args.a, args.b))
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
    p.add_argument("--limit", type=int, help="only the first N images (N >= 1)")
    p.add_argument(
        "--save-predictions",
        metavar="DIR",
        help="write one mask PNG per image into DIR (outside the dataset root; files there are kept unless --force)",
    )
    p.add_argument("--out", required=True, help="RESULT.json path")
    p.add_argument(
        "--force", action="store_true", help="overwrite --out and --save-predictions files, discard partial results"
    )
    p.add_argument(
        "--allow-partial",
        action="store_true",
        help="evaluate a dataset with fewer images than its manifest lists (a warning instead of an error)",
    )
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
    from alignclip.cli.notebooks import run_all, run_notebook
    from alignclip.errors import ConfigError
    from alignclip.study.notebooks import list_notebooks, notebook_parameters, notebook_path

    params = notebook_params(args)
    if args.nb_command == "list":
        for name in list_notebooks():
            declared = notebook_parameters(notebook_path(name))
            print(f"{name}: " + ", ".join(f"{k}={v[1]!r}" for k, v in declared.items()))
        return 0
    if args.nb_command == "run":
        out = run_notebook(args.name, params, args.out)
        print(f"executed notebook written to {out}")
        return 0
    if getattr(args, "rehearsal", False):
        if params.get("profile", "rehearsal") != "rehearsal":
            raise ConfigError(f"--rehearsal and -p profile {params['profile']} disagree; give one of them")
        params["profile"] = "rehearsal"
    if getattr(args, "cache_only", False):
        import os

        from alignclip.study.runs import CACHE_ONLY_ENV

        os.environ[CACHE_ONLY_ENV] = "1"  # the kernels inherit it: a missing result fails instead of evaluating
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
    pa.add_argument(
        "--rehearsal",
        action="store_true",
        help="the full profile's code paths with real-size random-weight models on generated data at each dataset's "
        "real layout and image size, one image each (same as -p profile rehearsal); every number a pipeline check",
    )
    pa.add_argument(
        "--cache-only",
        action="store_true",
        help="evaluate nothing: read every result from the runs cache (filled by `alignclip study run-jobs`); a "
        "missing one fails in one line",
    )
    for q in (pr, pa):
        add_notebook_params(q, "-p profile full -p datasets \"['potsdam']\"")
        q.add_argument(
            "--out",
            default="runs/notebooks",
            help="output folder (default runs/notebooks); the kernel runs in the current folder, so a relative "
            "output_dir or data_root parameter resolves there",
        )
        q.set_defaults(func=cmd_notebook)


def _progress_lines() -> None:
    """The package's progress lines (model loading, text encoding) on stderr, one short line each."""
    import logging

    class Stderr(logging.StreamHandler):  # whatever sys.stderr is at the time of the line (tests capture it)
        @property
        def stream(self):
            return sys.stderr

        @stream.setter
        def stream(self, value) -> None:
            pass

    pkg = logging.getLogger("alignclip")
    if not pkg.handlers:
        handler = Stderr()
        handler.setFormatter(logging.Formatter("%(message)s"))
        pkg.addHandler(handler)
        pkg.setLevel(logging.INFO)
        pkg.propagate = False  # once, whatever the root logger does


def main(argv: list[str] | None = None) -> int:
    """Run a command: ``error: ...`` on one line and exit status 2 for an :class:`AlignCLIPError`, 130 for Ctrl-C."""
    parser = build_parser()
    args = parser.parse_args(argv)
    _progress_lines()
    try:
        return args.func(args)
    except AlignCLIPError as exc:
        print(f"error: {' '.join(str(exc).splitlines())}", file=sys.stderr)  # one line, whatever the message
        return 2
    except KeyboardInterrupt:
        print("error: interrupted (Ctrl-C)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
