"""``alignclip study jobs | run-jobs | plan``: the study's evaluations as shardable jobs and their cost.

    alignclip study jobs [NOTEBOOK ...] --out jobs.jsonl [-p KEY VALUE ...]
    alignclip study run-jobs jobs.jsonl --shard I/N [--device cuda:0]
    alignclip study plan [NOTEBOOK ...] [--device cuda] [--bench BENCH.json | --bench paper] [-p KEY VALUE ...]

See :mod:`alignclip.study.jobs` and :mod:`alignclip.study.plan`.
"""

from __future__ import annotations

import argparse
import sys

from alignclip.cli.args import add_notebook_params, notebook_params

__all__ = ["cmd_study", "register_study"]


def _bench(args: argparse.Namespace):
    from alignclip.errors import ConfigError
    from alignclip.study.bench import load_measured_bench
    from alignclip.study.plan import PAPER_BENCH, load_bench_file

    if args.bench == PAPER_BENCH:
        return PAPER_BENCH
    if args.bench:
        return load_bench_file(args.bench)
    if args.device.startswith("cuda"):
        raise ConfigError(
            "no GPU benchmark given: run `alignclip bench --device cuda --out bench_gpu.json` on the GPU and pass "
            "--bench bench_gpu.json, or --bench paper for the paper's Table 11 times"
        )
    return load_measured_bench()  # this project's CPU measurement, shipped with the package


def cmd_study(args: argparse.Namespace) -> int:
    from alignclip.study.jobs import (
        distributed_rank,
        list_jobs,
        parse_shard,
        read_jobs,
        run_jobs,
        shard_jobs,
        write_jobs,
    )

    if args.study_command == "jobs":
        jobs = list_jobs(args.notebooks or None, notebook_params(args))
        path = write_jobs(jobs, args.out, force=args.force)
        shared = sum(len(j.notebooks) > 1 for j in jobs)
        print(f"{len(jobs)} jobs ({shared} shared by several notebooks) written to {path}")
        return 0
    if args.study_command == "run-jobs":
        shard, shards = parse_shard(args.shard)  # every error before any work
        jobs = shard_jobs(read_jobs(args.jobs), shard, shards)
        rank, world = distributed_rank()
        device = args.device
        if world > 1 and device is None:
            import os

            device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
        counts = run_jobs(jobs, device=device, progress=not args.no_progress and rank == 0)
        if rank == 0:
            print(
                f"shard {shard}/{shards}: {counts['done']} done, {counts['skipped']} skipped (cached), "
                f"{counts['failed']} failed of {len(jobs)} jobs"
            )
        return 1 if counts["failed"] else 0
    # plan
    from alignclip.study.plan import format_plan, plan_frame, plan_table

    bench = _bench(args)
    params = notebook_params(args)
    params.setdefault("profile", "full")  # the study a GPU would run; -p profile smoke plans the pipeline checks
    placeholder = params["profile"] == "full" and "upsampler_ckpt" not in params
    if placeholder:
        params["upsampler_ckpt"] = "none"  # same cost; the cache column then counts runs with a random upsampler
    frame = plan_frame(list_jobs(args.notebooks or None, params), bench)
    table = plan_table(frame)
    print(format_plan(table))
    if placeholder:
        print("cached: pass -p upsampler_ckpt PATH (and the other -p of your study) to count its cached results")
    if args.json:
        from alignclip.io.files import write_json

        write_json(args.json, {"source": table.attrs["source"], "notebooks": table.to_dict(orient="records")}, True)
        print(f"plan written to {args.json}", file=sys.stderr)
    return 0


def register_study(sub) -> None:
    """Add ``alignclip study`` to the command parsers ``sub``."""
    p = sub.add_parser("study", help="the study's evaluations as shardable jobs, and their cost plan")
    ssub = p.add_subparsers(dest="study_command", required=True)
    pj = ssub.add_parser("jobs", help="list every evaluation the notebooks run (deduplicated) into a JSONL file")
    pp = ssub.add_parser(
        "plan", help="evaluations, images, device-hours and disk per notebook and in total (default: profile full)"
    )
    for q in (pj, pp):
        q.add_argument("notebooks", nargs="*", help="notebooks (e.g. 03 05_sensitivity; default: all)")
        add_notebook_params(q)
        q.set_defaults(func=cmd_study)
    pj.add_argument("--out", required=True, help="jobs file to write (JSON lines)")
    pj.add_argument("--force", action="store_true", help="replace an existing jobs file")
    pp.add_argument("--device", default="cpu", help="device the study will run on (cpu, cuda): picks the benchmark")
    pp.add_argument(
        "--bench",
        help="an `alignclip bench --out` JSON measured on that device, or 'paper' (Table 11's GPU times); default "
        "for cpu: this project's CPU measurement",
    )
    pp.add_argument("--json", help="also write the plan as JSON to this file")
    pr = ssub.add_parser("run-jobs", help="run one shard of a jobs file into the shared runs cache")
    pr.add_argument("jobs", help="jobs file written by `alignclip study jobs`")
    pr.add_argument("--shard", default="1/1", help="I/N: run every N-th job starting at the I-th (default 1/1)")
    pr.add_argument("--device", help="device for every job (default: the jobs' own; under torchrun cuda:LOCAL_RANK)")
    pr.add_argument("--no-progress", action="store_true", help="no progress bar")
    pr.set_defaults(func=cmd_study)
