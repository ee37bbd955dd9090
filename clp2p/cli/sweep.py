"""``clp2p sweep`` and ``clp2p batch``: many renders into one results folder, in this process
or on a Ray cluster (:mod:`clp2p.workflows.sweep`, :mod:`clp2p.workflows.runner`)."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from clp2p.cli.args import (
    adapters_of,
    add_injection_args,
    add_model_args,
    add_sampling_args,
    check_output,
    edit_params,
    finish,
    model_name,
    settings_from,
    whole_number,
)
from clp2p.errors import Clp2pError
from clp2p.model import sweep
from clp2p.model.session import Session
from clp2p.workflows.manifest import FIELDS as MANIFEST_FIELDS

RUN_HELP = {
    "ray": "run on Ray: 'auto' starts a local Ray instance, an address (host:port) joins that "
    "cluster (needs the cluster extra: pip install -e '.[cluster]')",
    "workers": "Ray: how many workers (default: one per GPU, else one per THREADS CPUs)",
    "threads": "CPU threads per worker (default: every core in this process, 1 on Ray)",
}


def add_run_args(p: argparse.ArgumentParser) -> None:
    """Where the renders run: ``--ray``, ``--workers``, ``--threads``."""
    g = p.add_argument_group("where it runs")
    g.add_argument("--ray", metavar="ADDRESS", help=RUN_HELP["ray"])
    g.add_argument("--workers", type=whole_number, help=RUN_HELP["workers"])
    g.add_argument("--threads", type=whole_number, help=RUN_HELP["threads"])


def add_parsers(sub) -> None:
    s = sub.add_parser(
        "sweep",
        help="an edit over a grid of parameters and seeds, into a results folder",
        description="Render one edit over a grid: each --grid NAME=V1,V2,... varies one "
        f"parameter ({sweep.AXIS_HELP}). Items already in --out are skipped.",
    )
    src = s.add_mutually_exclusive_group(required=True)
    src.add_argument("--session", metavar="FILE", help="edit a node of this session")
    src.add_argument("--source", metavar="PROMPT", help="edit a generation of this prompt")
    s.add_argument("--node", help="--session: the node to edit (default: the root)")
    s.add_argument("--target", default="", help="the target prompt")
    s.add_argument("--grid", action="append", default=[], metavar="NAME=V1,V2,...")
    s.add_argument("--seeds", help="seeds, e.g. 0-3,7 (default: the session's or --seed)")
    s.add_argument("--out", required=True, help="the results folder")
    add_injection_args(s)
    add_sampling_args(s)
    add_model_args(s)
    add_run_args(s)
    finish(s, cmd_sweep)
    s.set_defaults(passive_threads=True, early=prepare_sweep)

    b = sub.add_parser(
        "batch",
        help="many edits or picture imports from a manifest, into a results folder",
        description='MANIFEST: one JSON object per line, e.g. {"prompt": "a red circle on a '
        'white background", "target": "a blue circle on a white background", "seed": 3, '
        '"preset": "p2p", "k": 0.5}; with "image": "photo.png" the prompt describes a '
        'picture that is imported first ("invert", "fit"). Fields: '
        f"{', '.join(MANIFEST_FIELDS)}; blank lines and lines starting with # are skipped. "
        "The sampling flags are the defaults of every line.",
    )
    b.add_argument("manifest")
    b.add_argument("--out", required=True, help="the results folder")
    add_sampling_args(b)
    add_model_args(b)
    add_run_args(b)
    finish(b, cmd_batch)
    b.set_defaults(passive_threads=True, early=prepare_batch)


def _check_counts(args: argparse.Namespace) -> None:
    for flag, value in (("--threads", args.threads), ("--workers", args.workers)):
        if value is not None and value < 1:
            raise Clp2pError(f"{flag} {value}: give 1 or more")


def pool_from(args: argparse.Namespace, spec):
    """The pool ``--ray`` / ``--workers`` / ``--threads`` ask for (the one
    :func:`start_early` started, if it did)."""
    from clp2p.workflows.runner import LocalPool, RayPool, Worker

    if getattr(args, "pool", None) is not None:
        return args.pool
    _check_counts(args)
    if args.ray:
        return RayPool(
            spec, args.ray, args.workers, args.threads or 1, gpus=args.device not in ("cpu",)
        )
    if args.workers not in (None, 1):
        raise Clp2pError("--workers: more than one worker runs on Ray: add --ray auto")
    return LocalPool(Worker(spec, args.threads or os.cpu_count()))


def spec_from(args: argparse.Namespace, model: str, adapters: tuple | None = None):
    """What every worker loads: ``model`` on ``--device`` / ``--dtype`` with ``adapters``
    (default: those of ``--lora`` / ``--embedding``)."""
    from clp2p.workflows.service import ModelSpec

    adapters = adapters_of(args) if adapters is None else adapters
    return ModelSpec(
        model=model,
        device=args.device,
        dtype=args.dtype,
        loras=tuple(a.spec() for a in adapters if a.kind == "lora"),
        embeddings=tuple(a.spec() for a in adapters if a.kind == "embedding"),
    )


def _sweep_items(args: argparse.Namespace) -> tuple[list, str, tuple, dict, sweep.Grid]:
    from clp2p.engine.families import is_xl
    from clp2p.workflows import session_io
    from clp2p.workflows.adapters import verify

    grid = sweep.Grid.parse(args.grid)
    seeds = sweep.parse_seeds(args.seeds) if args.seeds else ()
    if args.session:
        session, _ = session_io.load(args.session)
        verify(session.adapters)
        model, adapters = args.model or session.model, session.adapters
        node = args.node or session.root.id
        source = session.node(node).prompt
    else:
        if args.node:
            raise Clp2pError("--node names a node of --session: give --session too")
        model, adapters = model_name(args), adapters_of(args)
        session = Session.new(args.source, settings_from(args), model, adapters)
        node, source = "n1", args.source
    xl = is_xl(model)
    params = edit_params(args, xl=xl)
    items = sweep.sweep_items(session, node, args.target or source, params, grid, seeds, xl)
    file = str(Path(args.session).absolute()) if args.session else None
    asked = sweep.asked(session, node, args.target or source, params, grid, seeds, file)
    asked["model"] = model
    return items, model, adapters, asked, grid


@dataclass(frozen=True)
class Prepared:
    """A sweep's or batch's items, checked before anything heavy loads."""

    items: list
    model: str
    adapters: tuple
    asked: dict
    columns: str | None  # the axis of the contact sheet's columns


def _check_out(args: argparse.Namespace) -> None:
    from clp2p.workflows.sweep import ResultsFolder  # torch-free: checks before Ray starts

    check_output(ResultsFolder(args.out).folder / "results.csv")


def start_early(args: argparse.Namespace, model: str, adapters: tuple) -> None:
    """With ``--ray``: start Ray and its workers now, before this process loads torch, so
    that the workers load the model while this process loads its own libraries."""
    if not args.ray:
        return
    from clp2p.workflows.runner import RayPool

    _check_counts(args)
    fields = {
        "model": model,
        "device": args.device,
        "dtype": args.dtype,
        "loras": tuple(a.spec() for a in adapters if a.kind == "lora"),
        "embeddings": tuple(a.spec() for a in adapters if a.kind == "embedding"),
    }
    gpus = args.device not in ("cpu",)
    args.pool = RayPool(fields, args.ray, args.workers, args.threads or 1, gpus=gpus).start()


def prepare_sweep(args: argparse.Namespace) -> None:
    """Check everything and build the items (no torch); start Ray when asked."""
    items, model, adapters, asked, grid = _sweep_items(args)
    _check_out(args)
    columns = [n for n, _ in grid.axes][-1:] or [None]
    args.prepared = Prepared(items, model, adapters, asked, columns[0])
    start_early(args, model, adapters)


def prepare_batch(args: argparse.Namespace) -> None:
    from clp2p.engine.families import is_xl
    from clp2p.workflows import manifest

    model, adapters = model_name(args), adapters_of(args)
    defaults = settings_from(args)
    items = manifest.read(args.manifest, defaults, model, adapters, is_xl(model))
    _check_out(args)
    asked = {
        "kind": "batch",
        "manifest": str(Path(args.manifest).absolute()),
        "defaults": defaults.to_json(),
        "model": model,
    }
    args.prepared = Prepared(items, model, adapters, asked, None)
    start_early(args, model, adapters)


def cmd_sweep(args: argparse.Namespace) -> int:
    return _run(args, args.prepared)


def cmd_batch(args: argparse.Namespace) -> int:
    return _run(args, args.prepared)


def _run(args: argparse.Namespace, job: Prepared) -> int:
    from tqdm import tqdm

    from clp2p.workflows.contact_sheet import contact_sheet
    from clp2p.workflows.sweep import ResultsFolder, run_items

    items, columns = job.items, job.columns
    out = ResultsFolder(args.out)
    pool = getattr(args, "pool", None) or pool_from(args, spec_from(args, job.model, job.adapters))
    with pool:
        print(f"{len(items)} items on {pool.where}", file=sys.stderr, flush=True)
        bar = tqdm(total=len(items), unit="item", file=sys.stderr, dynamic_ncols=True)
        failures = []

        def on_item(row: dict, done: int, total: int) -> None:
            bar.total = total
            bar.n = done
            bar.refresh()
            if row.get("error"):
                failures.append(row)
                tqdm.write(f"item {row['key'][:12]}: FAILED {row['error']}", file=sys.stderr)

        def sheet(rows: list[dict], path: Path) -> None:
            contact_sheet(out.folder, rows, path, columns)

        report = run_items(items, out.folder, pool, job.asked, on_item=on_item, sheet=sheet)
        bar.close()
    print(
        f"{len(report.rows)} items: {report.rendered} rendered, {report.skipped} done before, "
        f"{report.failed} failed; wrote {out.folder / 'results.csv'}, results.json and "
        "contact-sheet.png"
    )
    return 1 if report.failed else 0
