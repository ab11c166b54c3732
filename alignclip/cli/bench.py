"""``alignclip bench``: time and memory of presets side by side (paper Table 11), optionally the growth with size.

Registered by :mod:`alignclip.cli.main` (:func:`register_bench`); the model flags are the segment command's.
"""

from __future__ import annotations

import argparse
import copy
import sys

from alignclip.cli.args import add_model_args, config_from_args

__all__ = ["bench_configs_from_args", "cmd_bench", "register_bench"]


def bench_configs_from_args(args: argparse.Namespace) -> dict:
    """``{preset spec: config}`` from ``--presets`` and the model flags (``--random-weights`` fills the weights)."""
    from alignclip.evaluation.bench import (  # imported on use: `alignclip --help` stays fast
        RANDOM_WEIGHTS,
        parse_bench_preset,
    )

    if args.random_weights:
        for flag in ("pretrained", "upsampler_ckpt", "vfm_pretrained"):
            if getattr(args, flag, None) is None:
                setattr(args, flag, "none")
    configs = {}
    for spec in args.presets:
        preset, extra = parse_bench_preset(spec)
        ns = copy.copy(args)
        ns.preset = preset
        config = config_from_args(ns)
        if args.random_weights:  # a method's own models too (ProxyCLIP's, CASS's VFM; Trident's SAM; CorrCLIP's masks)
            own = {
                k: v for k, v in RANDOM_WEIGHTS.items() if k not in ("pretrained", "upsampler_ckpt", "vfm_pretrained")
            }
            config = config.replace(**own)
        configs[spec] = config.replace(**extra)
    return configs


def cmd_bench(args: argparse.Namespace) -> int:
    from alignclip.evaluation.bench import growth, run_bench
    from alignclip.io.files import write_json
    from alignclip.io.images import check_output_path
    from alignclip.pipeline.runtime import resolve_device
    from alignclip.study.bench import bench_frame, check_targets

    check_output_path(args.json, None, overwrite=args.force, name="--json")  # before any timing
    configs = bench_configs_from_args(args)
    for config in configs.values():
        resolve_device(config.device)  # an unknown or missing device fails before any model is built
    log = None if args.quiet else (lambda msg: print(msg, file=sys.stderr))
    result = run_bench(
        list(configs),
        configs=configs,
        size=args.size,
        images=args.images,
        warmup=args.warmup,
        repeats=args.repeats,
        classes=args.classes,
        reference_flops=not args.no_reference_flops,
        breakdown=not args.no_breakdown,
        log=log,
    )
    if args.growth:
        first = next(iter(configs))
        table = growth(first, args.growth, config=configs[first], classes=args.classes, log=log)
        result["growth"] = table.to_dict(orient="records")
    targets = check_targets(result)
    result["targets"] = targets.to_dict(orient="records")
    write_json(args.json, result, overwrite=args.force)
    frame = bench_frame(result)
    frame["ms_ratio_ci"] = [f"[{lo:.3f}, {hi:.3f}]" for lo, hi in zip(frame["ci_low"], frame["ci_high"], strict=True)]
    frame = frame[
        [
            "preset",
            "ms_per_image",
            "peak_mem_mb",
            "gflop_per_image",
            "achieved_gflops",
            "efficiency",
            "reference_efficiency",
            "ms_ratio",
            "ms_ratio_ci",
            "mem_ratio",
            "label_agreement",
        ]
    ]
    print(frame.round(2).to_string(index=False))
    print(f"dense fp32 matmul: {result['matmul_gflops']['mean']:.1f} GFLOP/s on {result['environment']['device_name']}")
    if any(r["random_weights"] for r in result["presets"]):
        print("random weights in use: timings and memory are valid (weights do not change the cost), outputs are not")
    if not targets.empty:
        print(targets.round(3).to_string(index=False))
    print(f"bench written to {args.json}")
    return 0


def register_bench(sub) -> None:
    """Add ``alignclip bench`` to the command parsers ``sub``."""
    from alignclip.evaluation.bench import DEFAULT_CLASSES, DEFAULT_PRESETS

    p = sub.add_parser("bench", help="time and peak memory of presets side by side (paper Table 11)")
    p.add_argument(
        "--presets",
        nargs="+",
        default=list(DEFAULT_PRESETS),
        metavar="P",
        help="preset specs PRESET[+sga|+cce][:key=value,...]; ratios are to the first "
        f"(default: {' '.join(DEFAULT_PRESETS)})",
    )
    p.add_argument("--size", type=int, default=448, help="side of the square test images (default 448)")
    p.add_argument("--images", type=int, default=2, help="distinct test images per pass (default 2)")
    p.add_argument(
        "--repeats",
        type=int,
        default=5,
        help="timed passes over the images, every preset's runs interleaved with the others' (default 5); "
        "median reported, time ratios with a paired bootstrap 95%% interval",
    )
    p.add_argument("--warmup", type=int, default=1, help="untimed runs per preset first (default 1)")
    p.add_argument(
        "--classes",
        nargs="+",
        default=list(DEFAULT_CLASSES),
        metavar="NAME",
        help="class names (their number sets the text side of the cost)",
    )
    p.add_argument(
        "--random-weights",
        action="store_true",
        help="real-size models with random weights "
        "(same cost, no weight files): sets --pretrained/--upsampler-ckpt/--vfm-pretrained none",
    )
    p.add_argument(
        "--growth",
        nargs="+",
        type=int,
        metavar="SIDE",
        help="also time the first preset on square images of these sides without resize (e.g. 448 896 1792 3584)",
    )
    p.add_argument("--no-reference-flops", action="store_true", help="skip counting the upsampler's reference order")
    p.add_argument("--no-breakdown", action="store_true", help="skip the per-module time breakdown run")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.add_argument("--json", required=True, metavar="OUT.json", help="where the results go")
    p.add_argument("--force", action="store_true", help="overwrite --json")
    add_model_args(p)
    p.set_defaults(func=cmd_bench)
