"""``clp2p generate``, ``clp2p edit`` and ``clp2p invert``: single renders and picture import,
headless."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from functools import partial
from pathlib import Path

from clp2p.cli.args import (
    add_injection_args,
    add_model_args,
    add_sampling_args,
    check_output,
    check_text,
    edit_params,
    engine_from,
    finish,
    settings_from,
    whole_number,
)
from clp2p.engine.families import is_xl
from clp2p.errors import Clp2pError
from clp2p.model.adapters import Adapter
from clp2p.model.align import word_tokens
from clp2p.model.edits import resolve_edit
from clp2p.model.imported import DEFAULT_INNER_STEPS, DEFAULT_METHOD, FITS, METHODS
from clp2p.model.params import EDIT_KINDS, EditParams
from clp2p.workflows.adapters import verify


def add_parsers(sub) -> None:
    gen = sub.add_parser("generate", help="generate one image (no edit)")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--out", required=True, help="PNG file to write")
    add_model_args(gen)
    add_sampling_args(gen)
    finish(gen, cmd_generate)

    edit = sub.add_parser("edit", help="render a source prompt and edits of it")
    edit.add_argument("--source", help="the source prompt")
    edit.add_argument("--target", action="append", default=[], help="a target prompt (repeatable)")
    edit.add_argument("--edit", dest="kind", default=EDIT_KINDS[0], choices=EDIT_KINDS)
    add_injection_args(edit)
    edit.add_argument("--from", dest="from_file", help="re-run the edit recorded in an edit.json")
    edit.add_argument("--out", required=True, help="output folder")
    add_model_args(edit)
    add_sampling_args(edit)
    finish(edit, cmd_edit)

    inv = sub.add_parser("invert", help="import a picture: invert it into a new session")
    inv.add_argument("image", help="a PNG, JPEG or WebP file")
    inv.add_argument("--prompt", required=True, help="what the picture shows (edits change it)")
    inv.add_argument(
        "--method",
        default=DEFAULT_METHOD,
        choices=METHODS,
        help="direct (default: the source branch follows the inversion exactly), null-text "
        "(optimised, the reference; slowest) or negative-prompt (no optimisation)",
    )
    inv.add_argument("--fit", default=FITS[0], choices=FITS, help="fill the frame or show it whole")
    inv.add_argument(
        "--inner-steps",
        type=whole_number,
        default=DEFAULT_INNER_STEPS,
        help="null-text: optimisation steps per step",
    )
    inv.add_argument("--out", required=True, help="the session file to write (.json)")
    inv.add_argument("--embed-images", action="store_true", help="images inside the JSON")
    inv.add_argument("--force", action="store_true", help="overwrite an existing file")
    add_model_args(inv)
    add_sampling_args(inv)
    finish(inv, cmd_invert)


def cmd_generate(args: argparse.Namespace) -> int:
    from clp2p import atomic

    out = Path(args.out)
    if out.suffix.lower() != ".png" or out.is_dir():
        raise Clp2pError(f"--out '{out}' must be a .png file")
    check_output(out)
    check_text("prompt", args.prompt)
    settings = settings_from(args)
    engine = engine_from(args)
    result = engine.generate(args.prompt, settings)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_png(out, result.images[0])
    print(f"wrote {out} ({result.seconds:.1f} s)")
    return 0


def _apply_record(args: argparse.Namespace) -> list[tuple[str, EditParams]]:
    """Targets and settings from ``--from edit.json``: the recorded edit is re-run exactly
    (only --out, --model, --device and --dtype may change)."""
    path = Path(args.from_file)
    try:
        if path.exists() and not path.is_file():  # a folder; a FIFO would wait for a writer
            raise OSError("it is not a regular file")
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: not UTF-8, not JSON
        raise Clp2pError(f"--from '{path}': cannot read an edit record ({exc})") from None
    if not isinstance(record, dict) or record.get("format") != "clp2p-edit":
        raise Clp2pError(f"--from '{path}' is not an edit.json written by clp2p edit")
    try:
        args.source = args.source or str(record["source"])
        args.model = args.model or str(record["model"])
        s = record["settings"]
        args.seed, args.steps, args.guidance = s["seed"], s["steps"], s["guidance"]
        args.width, args.height = s["width"], s["height"]
        args.negative = str(s.get("negative", ""))
        args.scheduler, args.karras = str(s.get("scheduler", "ddim")), bool(s.get("karras"))
        args.recorded_adapters = tuple(Adapter.from_json(a) for a in record.get("adapters", []))
        return [(str(t["prompt"]), EditParams.from_json(t["params"])) for t in record["targets"]]
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        if isinstance(exc, Clp2pError):
            raise exc.prefixed("--from '{path}': ", path=str(path)) from None
        raise Clp2pError(
            f"--from '{path}': the edit record is damaged ({type(exc).__name__}: {exc}); "
            "re-run the edit from its flags"
        ) from None


def cmd_edit(args: argparse.Namespace) -> int:
    from clp2p.workflows.output import edit_record, write_edit

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise Clp2pError(f"--out '{out}' is a file: give a folder")
    check_output(out)
    if args.from_file:
        targets = _apply_record(args)
    else:
        if not args.source:
            raise Clp2pError("give --source PROMPT (or --from edit.json)")
        params = edit_params(args, args.kind, is_xl(args.model))
        prompts = args.target or ([args.source] if params.kind == "reweight" else [])
        if not prompts:
            raise Clp2pError("give at least one --target PROMPT")
        targets = [(t, params) for t in prompts]
    check_text("source", args.source)
    for target, params in targets:  # the word-level rules need no tokenizer: before loading
        resolve_edit(word_tokens(args.source), word_tokens(check_text("target", target)), params)
    settings = settings_from(args)
    recorded = getattr(args, "recorded_adapters", None)  # --from: the record's own files
    if recorded is not None:
        verify(recorded)
    engine = engine_from(args, adapters=recorded)
    result = engine.edit(args.source, targets, settings)
    record = edit_record(
        result,
        engine.name,
        str(engine.device),
        str(engine.dtype).replace("torch.", ""),
        ["clp2p", *args.argv],
        engine.adapters,
    )
    session = partial(_write_session, result=result, model=engine.name, adapters=engine.adapters)
    write_edit(out, result, record, session)
    kinds = ", ".join(b.edit.kind for b in result.branches[1:])
    print(f"wrote {out}/ source + {len(targets)} target(s) [{kinds}] in {result.seconds:.1f} s")
    return 0


def _write_session(folder: Path, *, result, model: str, adapters: tuple) -> None:
    """The edit as a one-level session (root + one node per target) with its images."""
    from clp2p.model.session import Session, image_hash
    from clp2p.workflows import session_io

    session = Session.new(result.branches[0].prompt, result.settings, model, adapters)
    for b in result.branches[1:]:
        session, _ = session.add_edit("n1", b.prompt, b.edit)
    images = {}
    for node, image in zip(session.nodes, result.images, strict=True):
        key = image_hash(image)
        images[key] = image
        session = session.update(node.id, status="rendered", image=key)
    session_io.save(session, folder / "session.json", images)


def _session_out(args: argparse.Namespace) -> Path:
    """``--out`` of ``invert``, checked before anything is read or loaded: a new .json file
    (or one to replace with ``--force``) in a folder that can take it and its images."""
    out = Path(args.out)
    if out.suffix.lower() != ".json" or out.is_dir():
        what = "is a folder" if out.is_dir() else "is not a .json file"
        raise Clp2pError(f"--out '{out}' {what}: give a .json session file")
    if out.exists() and not args.force:
        raise Clp2pError(f"--out '{out}' exists: pick another name or add --force")
    check_output(out)
    beside = out.parent / f"{out.stem}.images"  # where the images go
    if not args.embed_images and (beside.exists() or beside.is_symlink()) and not beside.is_dir():
        raise Clp2pError(f"'{beside}' is not a folder: move it, or add --embed-images")
    return out


def cmd_invert(args: argparse.Namespace) -> int:
    from clp2p.model.imported import read_image
    from clp2p.workflows import session_io
    from clp2p.workflows.picture_import import import_image

    out = _session_out(args)
    if args.inner_steps < 1:
        raise Clp2pError(f"--inner-steps {args.inner_steps}: give at least 1")
    check_text("prompt", args.prompt)
    settings = settings_from(args)
    image = read_image(args.image)
    engine = engine_from(args)
    last = [-1]

    def progress(done: int, total: int) -> None:
        percent = 100 * done // total
        if percent >= last[0] + 10 or done == total:
            last[0] = percent
            print(f"inverting: {percent}%", flush=True)

    session, images = import_image(
        engine,
        image,
        args.prompt,
        settings,
        args.method,
        fit=args.fit,
        file=Path(args.image).name,
        inner_steps=args.inner_steps,
        on_step=progress,
    )
    session = replace(
        session,
        device=str(engine.device),
        dtype=str(engine.dtype).replace("torch.", ""),
        adapters=engine.adapters,
    )
    session_io.save(session, out, images, embed=args.embed_images)
    imp = session.imported
    quality = "exact" if imp.psnr is None else f"{imp.psnr:.2f} dB"
    print(
        f"wrote {out}: {args.method} inversion in {imp.seconds:.1f} s ({imp.unet_forward} UNet "
        f"passes, {imp.unet_backward} backward); reconstruction PSNR {quality}"
    )
    return 0
