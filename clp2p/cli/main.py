"""The ``clp2p`` command line (no Qt): the parser of every command, and the one error boundary
that turns bad input into one line and exit status 2."""

from __future__ import annotations

import argparse
import os
import sys

from clp2p.errors import Clp2pError


def build_parser() -> argparse.ArgumentParser:
    from clp2p.cli import bench, edit, eval, session, sweep
    from clp2p.cli.args import one_line_errors

    parser = argparse.ArgumentParser(
        prog="clp2p",
        description="Text-based image editing with Stable Diffusion through attention control.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    edit.add_parsers(sub)
    session.add_parser(sub)
    sweep.add_parsers(sub)
    eval.add_parser(sub)
    bench.add_parser(sub)
    one_line_errors(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    if getattr(args, "passive_threads", False):
        # Commands that render many times in a row on a shared machine: OpenMP threads that
        # spin while they wait made one render 70x slower beside another torch process; they
        # must sleep instead. Set before torch loads its OpenMP runtime.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        early = getattr(args, "early", None)
        if early is not None:  # checks, and work to start before torch loads (Ray's workers)
            early(args)
        if getattr(args, "pool", None) is None:  # else this process only hands work to Ray
            from clp2p.engine.loading import quiet_libraries

            quiet_libraries()
        return args.run(args)
    except Clp2pError as exc:
        print(f"clp2p: error: {exc.render(args.field_flags)}", file=sys.stderr)
        return 2
    except OSError as exc:  # a file or folder the command could not read or write
        where = f" '{exc.filename}'" if exc.filename else ""
        print(f"clp2p: error: cannot use{where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # a fault of clp2p's own: one line (CLP2P_DEBUG=1 shows more)
        if os.environ.get("CLP2P_DEBUG"):
            raise
        print(
            f"clp2p: internal error: {type(exc).__name__}: {exc} (please report it; "
            "CLP2P_DEBUG=1 shows where it happened)",
            file=sys.stderr,
        )
        return 3


if __name__ == "__main__":
    sys.exit(main())
