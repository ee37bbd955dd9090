"""``clp2p bench ...``: the benchmarks the project keeps (overhead, session, records, refine,
sweep, inversion)."""

from __future__ import annotations

import argparse

from clp2p.bench.records import ARCHS, EDITS
from clp2p.cli.args import finish
from clp2p.errors import Clp2pError


def add_parser(sub) -> None:
    bench = sub.add_parser("bench", help="benchmarks")
    bsub = bench.add_subparsers(dest="bench", required=True)
    over = bsub.add_parser("overhead", help="engine vs diffusers' pipeline, time and memory")
    over.add_argument("--json", help="also write the results to this file")
    over.add_argument("--quick", action="store_true", help="one small configuration only")
    finish(over, cmd_overhead)
    sess = bsub.add_parser("session", help="node-by-node chain rendering with reuse vs cold")
    sess.add_argument("--json", help="also write the results to this file")
    sess.add_argument("--model", help="default: the embedded shapes model")
    sess.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    finish(sess, cmd_session)
    recs = bsub.add_parser("records", help="session records and reuse at real model sizes")
    recs.add_argument("--arch", choices=tuple(ARCHS), default="sd15")
    recs.add_argument("--size", type=int, help="default: the architecture's native size")
    recs.add_argument("--steps", type=int, default=2, help="denoising steps of the timed renders")
    recs.add_argument("--timing", action="store_true", help="also time depth-4 chains")
    recs.add_argument(
        "--timed-edits", nargs="+", choices=tuple(EDITS), default=list(EDITS), metavar="EDIT"
    )
    recs.add_argument(
        "--cold-depths",
        nargs="+",
        type=int,
        choices=(1, 2, 3, 4),
        default=[1, 2, 3, 4],
        metavar="DEPTH",
        help="the depths whose cold render is timed too (default: all)",
    )
    recs.add_argument(
        "--dtype",
        choices=("fp32", "bf16"),
        default="fp32",
        help="the render's dtype: bf16 sizes records as a GPU's fp16 render keeps them",
    )
    recs.add_argument("--json", help="also write the results to this file")
    recs.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    finish(recs, cmd_records)
    bref = bsub.add_parser("refine", help="a refinement's padding: reference vs shifted")
    bref.add_argument("--pairs", type=int, default=12, help="shapes-world pairs")
    bref.add_argument("--json", help="also write the results to this file")
    bref.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    finish(bref, cmd_refine)
    bsw = bsub.add_parser("sweep", help="a shapes sweep: one worker vs all cores vs Ray")
    bsw.add_argument("--steps", type=int, default=30, help="denoising steps (default 30)")
    bsw.add_argument("--json", help="also write the results to this file")
    finish(bsw, cmd_sweep)
    bsw.set_defaults(passive_threads=True)
    binv = bsub.add_parser("inversion", help="inversion methods: cost, reconstruction, edits")
    binv.add_argument("--json", help="also write the results to this file")
    binv.add_argument("--model", help="default: the embedded shapes model")
    binv.add_argument("--pairs", type=int, default=12, help="pictures (colour swaps) to invert")
    binv.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    binv.add_argument("--examples", help="also draw a figure of examples to this PNG")
    finish(binv, cmd_inversion)
    binv.set_defaults(passive_threads=True)  # many renders in a row: see clp2p.cli.main


def cmd_overhead(args: argparse.Namespace) -> int:
    from clp2p.bench.overhead import run_overhead

    run_overhead(json_path=args.json, quick=args.quick)
    return 0


def cmd_session(args: argparse.Namespace) -> int:
    from clp2p.bench.session import run_session_bench

    run_session_bench(json_path=args.json, model=args.model, threads=args.threads)
    return 0


def cmd_records(args: argparse.Namespace) -> int:
    from clp2p.bench.records import run_records_bench
    from clp2p.model.settings import RenderSettings

    RenderSettings(steps=args.steps, width=args.size, height=args.size)  # checks the bounds
    run_records_bench(
        args.arch,
        args.size,
        args.steps,
        args.timing,
        args.json,
        args.threads,
        args.timed_edits,
        args.cold_depths,
        args.dtype,
    )
    return 0


def cmd_refine(args: argparse.Namespace) -> int:
    from clp2p.bench.refine import run_refine_bench

    if args.pairs < 1:
        raise Clp2pError(f"--pairs {args.pairs}: give at least 1")
    run_refine_bench(args.pairs, args.json, args.threads)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from clp2p.bench.sweep import run_sweep_bench
    from clp2p.model.settings import RenderSettings

    RenderSettings(steps=args.steps)  # checks the bounds
    run_sweep_bench(steps=args.steps, json_path=args.json)
    return 0


def cmd_inversion(args: argparse.Namespace) -> int:
    from clp2p.bench.inversion import run_inversion_bench

    if args.pairs < 1:
        raise Clp2pError(f"--pairs {args.pairs}: give at least 1")
    run_inversion_bench(
        json_path=args.json,
        model=args.model,
        pairs=args.pairs,
        threads=args.threads,
        examples=args.examples,
    )
    return 0
