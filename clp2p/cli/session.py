"""``clp2p session new|add|render|show|export``: build, inspect and run sessions headless."""

from __future__ import annotations

import argparse
from pathlib import Path

from clp2p import atomic
from clp2p.cli.args import (
    INJECTION_FIELDS,
    adapters_of,
    add_injection_args,
    add_model_args,
    add_sampling_args,
    check_output,
    edit_params,
    engine_from,
    finish,
    model_name,
    settings_from,
)
from clp2p.engine.families import is_xl
from clp2p.errors import Clp2pError
from clp2p.model.session import (
    NODE_KINDS,
    Session,
    describe_metrics,
    other_weights_message,
    rendered_by_other,
)
from clp2p.workflows import session_io
from clp2p.workflows.adapters import verify
from clp2p.workflows.record_cache import DEFAULT_BUDGET
from clp2p.workflows.record_spill import DEFAULT_SPILL, records_folder
from clp2p.workflows.service import FAST_MODE


def add_parser(sub) -> None:
    p = sub.add_parser("session", help="sessions: trees of edits")
    ssub = p.add_subparsers(dest="session_command", required=True)

    new = ssub.add_parser("new", help="start a session from a root prompt")
    new.add_argument("file")
    new.add_argument("--prompt", required=True)
    new.add_argument("--force", action="store_true", help="overwrite an existing file")
    add_model_args(new)
    add_sampling_args(new)
    finish(new, _new)

    add = ssub.add_parser("add", help="add an edit node")
    add.add_argument("file")
    add.add_argument("--parent", required=True, help="the node to edit (e.g. n1)")
    add.add_argument("--kind", choices=NODE_KINDS[1:])
    add.add_argument("--target", default="", help="the target prompt (not for cycle)")
    add.add_argument("--ancestor", help="cycle: the ancestor to return to (default: the parent's)")
    add.add_argument("--name", default="")
    add_injection_args(add)
    finish(add, _add)

    render = ssub.add_parser("render", help="render nodes; compare with the stored hashes")
    render.add_argument("file")
    render.add_argument("--node", action="append", default=[], help="only these nodes")
    render.add_argument("--out", help="also write each node's image as DIR/<node>.png")
    render.add_argument("--no-cache", action="store_true", help="render every chain from the root")
    render.add_argument("--batch", action="store_true", help=FAST_MODE)
    render.add_argument(
        "--cache-mib",
        type=int,
        default=DEFAULT_BUDGET // 2**20,
        help="memory budget of the render cache (MiB)",
    )
    render.add_argument(
        "--spill-mib",
        type=int,
        default=DEFAULT_SPILL // 2**20,
        help="disk space for the records the render cache evicts, kept in FILE.records/ "
        "beside the session for later renders, least recently used deleted first "
        "(MiB; 0: off; default %(default)s)",
    )
    add_model_args(render, adapters=False)  # the session's own LoRAs and embeddings
    finish(render, _render)

    show = ssub.add_parser("show", help="print the tree")
    show.add_argument("file")
    finish(show, _show)

    export = ssub.add_parser("export", help="write the whole history to another file")
    export.add_argument("file")
    export.add_argument("--out", required=True)
    export.add_argument("--embed-images", action="store_true", help="images inside the JSON")
    finish(export, _export)


def _load(path: str):
    return session_io.load(path)


def _new(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if path.exists() and not args.force:
        raise Clp2pError(f"'{path}' exists: pick another file or pass --force")
    settings = settings_from(args)
    session = Session.new(args.prompt, settings, model_name(args), adapters_of(args))
    session_io.save(session, path)
    print(f"wrote {path}: root n1 '{args.prompt}'")
    return 0


def _add(args: argparse.Namespace) -> int:
    with session_io.locked(args.file):  # a render storing a node meanwhile waits, then merges
        return _add_locked(args)


def _add_locked(args: argparse.Namespace) -> int:
    session, images = _load(args.file)
    if args.kind == "cycle":
        explicit = any(getattr(args, f) is not None for f in INJECTION_FIELDS)
        params = edit_params(args, xl=is_xl(session.model)) if explicit else None
        session, node_id = session.add_cycle(args.parent, args.ancestor, params)
    else:
        params = edit_params(args, xl=is_xl(session.model))
        session, node_id = session.add_edit(args.parent, args.target, params, args.kind)
    if args.name:
        session = session.update(node_id, name=args.name)
    session_io.save(session, args.file, images)
    node = session.node(node_id)
    print(f"{node_id}: {node.kind} of {node.parent} -> '{node.prompt}'")
    return 0


def _render(args: argparse.Namespace) -> int:
    from clp2p.engine.engine import RenderOptions
    from clp2p.workflows.session_render import apply

    session, images = _load(args.file)
    ids = args.node or [n.id for n in session.nodes]
    for node_id in ids:
        session.node(node_id)
    _check_sizes(args)
    out = Path(args.out) if args.out else None
    if out:
        check_output(out / f"{ids[0]}.png")
    renderer = _renderer(args, session)
    options = RenderOptions(batch_branches=args.batch)
    if out:
        out.mkdir(parents=True, exist_ok=True)
    weights = renderer.weights
    if message := other_weights_message(session, weights):
        print(message)
    differ, failed = [], []
    for node_id in ids:
        try:
            result = renderer.render(
                session, node_id, images, use_cache=not args.no_cache, options=options
            )
        except Clp2pError as exc:  # the other nodes go on; this one is named at the end
            failed.append(node_id)
            print(f"{node_id}: FAILED {exc.render(args.field_flags)}")
            continue
        stored = session.node(node_id).image
        missing = result.hash not in images  # e.g. its file was lost or damaged
        images[result.hash] = result.image
        state = "new"
        if stored is None:
            session = apply(session, result)
            _store(args.file, session, node_id, result, images)
        elif stored == result.hash:
            state = "same"
            if missing:  # the image file is written again
                _store(args.file, session, node_id, result, images)
        else:
            state = "DIFFERS"
            if rendered_by_other(session.node(node_id), weights):
                state += f" (rendered with weights {session.node(node_id).weights})"
            differ.append(node_id)
        if out:
            atomic.write_png(out / f"{node_id}.png", result.image)
        metrics = describe_metrics(result.metrics)
        print(f"{node_id}: {state} {result.hash[:12]} {result.seconds:.2f} s {metrics}".rstrip())
        if result.note:  # a cached record could not serve it
            print(f"{node_id}: {result.note}")
    if renderer.cache.spill is not None:
        print(_records_held(renderer.cache))
    if differ:
        print(f"{len(differ)} node(s) differ from the stored images: {', '.join(differ)}")
    if failed:
        print(f"{len(failed)} node(s) failed: {', '.join(failed)}; the others are saved")
        return 2
    return 1 if differ else 0


def _renderer(args: argparse.Namespace, session: Session):
    """The session renderer of ``args``' model (the session's by default) with the session's
    own LoRAs and embeddings (checked unchanged), its cache and spill."""
    from clp2p.workflows.session_render import SessionRenderer

    verify(session.adapters)
    engine = engine_from(args, args.model or session.model, session.adapters)
    renderer = SessionRenderer(engine, args.cache_mib * 2**20)
    if not args.no_cache:
        renderer.spill_to(records_folder(args.file), args.spill_mib * 2**20)
    return renderer


def _check_sizes(args: argparse.Namespace) -> None:
    if args.cache_mib < 0:
        raise Clp2pError(f"--cache-mib {args.cache_mib}: give a size in MiB, 0 or more")
    if args.spill_mib < 0:
        raise Clp2pError(f"--spill-mib {args.spill_mib}: give a size in MiB, 0 (off) or more")


def _records_held(cache) -> str:
    return (
        f"records: {len(cache)} in memory ({cache.nbytes / 2**30:.2f} GiB), "
        f"{cache.spilled} on disk ({cache.spilled_bytes / 2**30:.2f} GiB) in {cache.spill.folder}"
    )


def _store(path: str, rendered: Session, node_id: str, result, images: dict) -> None:
    """Save one node's render at once (a later failure or a kill loses nothing), into the
    file as it is now, holding its lock: a change another command made meanwhile is kept,
    and the result is stored only if the node still stands for what was rendered."""
    from clp2p.model.session import chain_key
    from clp2p.workflows.session_render import apply

    with session_io.locked(path):
        current = session_io.read(path)[0]  # images: this render's, in memory since its start
        try:
            same = chain_key(current, current.path(node_id)) == chain_key(
                rendered, rendered.path(node_id)
            )
        except Clp2pError:  # the node was deleted meanwhile
            same = False
        if not same:
            print(f"{node_id}: changed in the file meanwhile; its render is not stored")
            return
        if current.node(node_id).image is None:
            current = apply(current, result)
        images[result.hash] = result.image
        if {n.image for n in current.nodes if n.image} - set(images):
            images.update(_load(path)[1])  # another program stored renders meanwhile
        session_io.save(current, path, images)


def _show(args: argparse.Namespace) -> int:
    session, _ = _load(args.file)
    s = session.settings
    print(f"model {session.model}, seed {s.seed}, {s.steps} steps, guidance {s.guidance}")

    children: dict[str | None, list] = {}
    for n in session.nodes:
        children.setdefault(n.parent, []).append(n)
    stack = [(session.root, 0)]  # depth first, without recursion: chains may be deep
    while stack:
        n, depth = stack.pop()
        mark = "*" if n.favourite else " "
        extra = f" (reverses {n.reverses})" if n.reverses else ""
        name = f" [{n.name}]" if n.name else ""
        params = f" {n.params.preset}" if n.params else ""
        metrics = describe_metrics(n.metrics)
        weights = f" weights {n.weights}" if n.weights else ""
        print(
            f"{'  ' * depth}{mark}{n.id} {n.kind}{extra}{name}{params}: '{n.prompt}' "
            f"{n.status}{weights}{' ' + metrics if metrics else ''}"
        )
        stack.extend((child, depth + 1) for child in reversed(children.get(n.id, [])))
    return 0


def _export(args: argparse.Namespace) -> int:
    session, images = _load(args.file)
    session_io.save(session, args.out, images, embed=args.embed_images)
    print(f"wrote {args.out} ({len(session.nodes)} nodes, {len(images)} images)")
    return 0
