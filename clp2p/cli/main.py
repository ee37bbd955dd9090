"""The ``clp2p`` command line: generate, edit and benchmarks, headless (no Qt)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

from clp2p.errors import Clp2pError
from clp2p.model.imported import DEFAULT_METHOD, METHODS
from clp2p.model.params import CrossWindow, EditParams, RenderSettings, StepWindow, preset


def _add_model_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        help="'shapes' (the embedded model, default when installed), a diffusers folder, "
        "a .safetensors/.ckpt SD 1.x/2.x file, or a Hugging Face repo id in the local cache",
    )
    g.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    g.add_argument(
        "--dtype", default="auto", help="auto (fp16 on GPU, fp32 on CPU), fp32, fp16, bf16"
    )
    g.add_argument(
        "--allow-download",
        action="store_true",
        help="allow downloading a Hub model that is not in the local cache",
    )
    g.add_argument("--prediction-type", choices=("epsilon", "v_prediction"))


def _add_sampling_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--steps", type=int, default=50)
    g.add_argument("--guidance", type=float, default=7.5)
    g.add_argument("--width", type=int)
    g.add_argument("--height", type=int)


def add_injection_args(p: argparse.ArgumentParser) -> None:
    """The edit's injection flags (``clp2p edit`` and ``clp2p session add``)."""
    g = p.add_argument_group("injection")
    g.add_argument("--reweight", nargs="+", default=[], metavar="WORD=SCALE")
    g.add_argument("--preset", default="cl-p2p", choices=("p2p", "cl-p2p"))
    g.add_argument("--k", type=float, help="local-blend silhouette threshold in [0, 1]")
    g.add_argument("--cross", help="cross-attention window: F, A:B or [F,]word=F,...")
    g.add_argument("--self", dest="self_window", help="self-attention window: F or A:B")
    g.add_argument("--self-res", help="self-injection only in grids up to NxN, or 'all'")
    g.add_argument("--v-inject", help="V value injection window: F or A:B")
    g.add_argument("--v-blend", type=float, help="V blend beta in [0, 1]")
    g.add_argument("--v-layers", choices=("self", "cross", "both"))
    g.add_argument("--blend-words", nargs="+", default=[], metavar="W")
    g.add_argument(
        "--inject-uncond",
        action="store_true",
        help="also edit the unconditional half of classifier-free guidance",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="clp2p",
        description="Text-based image editing with Stable Diffusion through attention control.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    gen = sub.add_parser("generate", help="generate one image (no edit)")
    gen.add_argument("--prompt", required=True)
    gen.add_argument("--out", required=True, help="PNG file to write")
    _add_model_args(gen)
    _add_sampling_args(gen)

    edit = sub.add_parser("edit", help="render a source prompt and edits of it")
    edit.add_argument("--source", help="the source prompt")
    edit.add_argument("--target", action="append", default=[], help="a target prompt (repeatable)")
    edit.add_argument("--edit", default="auto", choices=("auto", "swap", "refine", "reweight"))
    add_injection_args(edit)
    edit.add_argument("--from", dest="from_file", help="re-run the edit recorded in an edit.json")
    edit.add_argument("--out", required=True, help="output folder")
    _add_model_args(edit)
    _add_sampling_args(edit)

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
    inv.add_argument(
        "--fit", default="crop", choices=("crop", "fit"), help="fill the frame or show it whole"
    )
    inv.add_argument(
        "--inner-steps", type=int, default=10, help="null-text: optimisation steps per step"
    )
    inv.add_argument("--out", required=True, help="the session file to write (.json)")
    inv.add_argument("--embed-images", action="store_true", help="images inside the JSON")
    inv.add_argument("--force", action="store_true", help="overwrite an existing file")
    _add_model_args(inv)
    _add_sampling_args(inv)

    from clp2p.cli.session import add_session_parser

    add_session_parser(sub)

    from clp2p.cli.eval import add_eval_parser

    add_eval_parser(sub)

    bench = sub.add_parser("bench", help="benchmarks")
    bsub = bench.add_subparsers(dest="bench", required=True)
    over = bsub.add_parser("overhead", help="engine vs diffusers' pipeline, time and memory")
    over.add_argument("--json", help="also write the results to this file")
    over.add_argument("--quick", action="store_true", help="one small configuration only")
    sess = bsub.add_parser("session", help="node-by-node chain rendering with reuse vs cold")
    sess.add_argument("--json", help="also write the results to this file")
    sess.add_argument("--model", help="default: the embedded shapes model")
    sess.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    binv = bsub.add_parser("inversion", help="inversion methods: cost, reconstruction, edits")
    binv.add_argument("--json", help="also write the results to this file")
    binv.add_argument("--model", help="default: the embedded shapes model")
    binv.add_argument("--pairs", type=int, default=12, help="pictures (colour swaps) to invert")
    binv.add_argument("--threads", type=int, help="CPU threads (default: all cores)")
    binv.add_argument("--examples", help="also draw a figure of examples to this PNG")
    return parser


def edit_params(args: argparse.Namespace) -> EditParams:
    """The edit parameters from the preset and the flags that override it."""
    params = preset(args.preset).with_(kind=getattr(args, "edit", "auto"))
    if args.k is not None:
        params = params.with_(k=args.k)
    if args.cross is not None:
        params = params.with_(cross=CrossWindow.parse(args.cross, params.cross.default))
    if args.self_window is not None:
        params = params.with_(self_window=StepWindow.parse(args.self_window, "--self"))
    if args.self_res is not None:
        params = params.with_(self_res=_parse_res(args.self_res))
    if args.v_inject is not None:
        params = params.with_(v_window=StepWindow.parse(args.v_inject, "--v-inject"))
    if args.v_blend is not None:
        params = params.with_(v_blend=args.v_blend)
    if args.v_layers is not None:
        params = params.with_(v_layers=args.v_layers)
    if args.blend_words:
        params = params.with_(blend_words=tuple(args.blend_words))
    if args.reweight:
        params = params.with_(reweight=tuple(_parse_reweight(r) for r in args.reweight))
    if args.inject_uncond:
        params = params.with_(inject_uncond=True)
    if params.v_blend > 0 and params.v_window.empty:
        raise Clp2pError(
            "--v-blend is set but the --v-inject window is empty: give e.g. --v-inject 0.5"
        )
    return params


def _parse_res(text: str) -> int | None:
    if text == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise Clp2pError(
            f"--self-res '{text}': give a side length such as 16 or 32, or 'all'"
        ) from None


def _parse_reweight(item: str) -> tuple[str, float]:
    word, sep, value = item.partition("=")
    try:
        if not sep or not word:
            raise ValueError
        return word, float(value)
    except ValueError:
        raise Clp2pError(
            f"--reweight '{item}': write WORD=SCALE, e.g. smiling=2 or red=-1"
        ) from None


def settings_from(args: argparse.Namespace) -> RenderSettings:
    return RenderSettings(args.seed, args.steps, args.guidance, args.width, args.height)


def model_name(args: argparse.Namespace) -> str:
    from clp2p.resources import SHAPES, shapes_model_dir

    if args.model:
        return args.model
    if (shapes_model_dir() / "model_index.json").is_file():
        return SHAPES
    raise Clp2pError("give --model: a diffusers folder, a .safetensors/.ckpt file or a repo id")


def engine_from(args: argparse.Namespace):
    from clp2p.engine.engine import Engine

    return Engine.load(
        model_name(args),
        args.device,
        args.dtype,
        allow_download=args.allow_download,
        prediction_type=args.prediction_type,
    )


def cmd_generate(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.suffix.lower() != ".png":
        raise Clp2pError(f"--out '{out}' must be a .png file")
    settings = settings_from(args)
    engine = engine_from(args)
    result = engine.generate(args.prompt, settings)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    result.pil(0).save(tmp)
    tmp.replace(out)
    print(f"wrote {out} ({result.seconds:.1f} s)")
    return 0


def _apply_record(args: argparse.Namespace) -> list[tuple[str, EditParams]]:
    """Targets and settings from ``--from edit.json``: the recorded edit is re-run exactly
    (only --out, --model, --device and --dtype may change)."""
    path = Path(args.from_file)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise Clp2pError(f"--from '{path}': cannot read an edit record ({exc})") from None
    if record.get("format") != "clp2p-edit":
        raise Clp2pError(f"--from '{path}' is not an edit.json written by clp2p edit")
    args.source = args.source or record["source"]
    args.model = args.model or record["model"]
    s = record["settings"]
    args.seed, args.steps, args.guidance = s["seed"], s["steps"], s["guidance"]
    args.width, args.height = s["width"], s["height"]
    return [(t["prompt"], EditParams.from_json(t["params"])) for t in record["targets"]]


def cmd_edit(args: argparse.Namespace, argv: list[str]) -> int:
    from clp2p.workflows.output import edit_record, write_edit

    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise Clp2pError(f"--out '{out}' is a file: give a folder")
    if args.from_file:
        targets = _apply_record(args)
    else:
        if not args.source:
            raise Clp2pError("give --source PROMPT (or --from edit.json)")
        params = edit_params(args)
        prompts = args.target or ([args.source] if params.kind == "reweight" else [])
        if not prompts:
            raise Clp2pError("give at least one --target PROMPT")
        targets = [(t, params) for t in prompts]
    settings = settings_from(args)
    engine = engine_from(args)
    result = engine.edit(args.source, targets, settings)
    record = edit_record(
        result,
        engine.name,
        str(engine.device),
        str(engine.dtype).replace("torch.", ""),
        ["clp2p", *argv],
    )
    write_edit(out, result, record, lambda tmp: _write_session(tmp, result, engine.name))
    kinds = ", ".join(b.edit.kind for b in result.branches[1:])
    print(f"wrote {out}/ source + {len(targets)} target(s) [{kinds}] in {result.seconds:.1f} s")
    return 0


def _write_session(folder: Path, result, model: str) -> None:
    """The edit as a one-level session (root + one node per target) with its images."""
    from clp2p.model.session import Session, image_hash
    from clp2p.workflows import session_io

    session = Session.new(result.branches[0].prompt, result.settings, model)
    for b in result.branches[1:]:
        session, _ = session.add_edit("n1", b.prompt, b.edit)
    images = {}
    for node, image in zip(session.nodes, result.images, strict=True):
        key = image_hash(image)
        images[key] = image
        session = session.update(node.id, status="rendered", image=key)
    session_io.save(session, folder / "session.json", images)


def cmd_invert(args: argparse.Namespace) -> int:
    from clp2p.engine.inversion import import_image
    from clp2p.model.imported import read_image
    from clp2p.workflows import session_io

    out = Path(args.out)
    if out.suffix.lower() != ".json":
        raise Clp2pError(f"--out '{out}' must be a .json session file")
    if out.exists() and not args.force:
        raise Clp2pError(f"--out '{out}' exists: pick another name or add --force")
    if args.inner_steps < 1:
        raise Clp2pError(f"--inner-steps {args.inner_steps}: give at least 1")
    image = read_image(args.image)
    settings = settings_from(args)
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
        session, device=str(engine.device), dtype=str(engine.dtype).replace("torch.", "")
    )
    session_io.save(session, out, images, embed=args.embed_images)
    imp = session.imported
    quality = "exact" if imp.psnr is None else f"{imp.psnr:.2f} dB"
    print(
        f"wrote {out}: {args.method} inversion in {imp.seconds:.1f} s ({imp.unet_forward} UNet "
        f"passes, {imp.unet_backward} backward); reconstruction PSNR {quality}"
    )
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    if args.bench == "session":
        from clp2p.bench.session import run_session_bench

        run_session_bench(json_path=args.json, model=args.model, threads=args.threads)
        return 0
    if args.bench == "inversion":
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
    from clp2p.bench.overhead import run_overhead

    run_overhead(json_path=args.json, quick=args.quick)
    return 0


def main(argv: list[str] | None = None) -> int:
    from clp2p.engine.loading import quiet_libraries

    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    quiet_libraries()
    try:
        if args.command == "generate":
            return cmd_generate(args)
        if args.command == "edit":
            return cmd_edit(args, argv)
        if args.command == "invert":
            return cmd_invert(args)
        if args.command == "session":
            from clp2p.cli.session import cmd_session

            return cmd_session(args)
        if args.command == "eval":
            from clp2p.cli.eval import cmd_eval

            return cmd_eval(args)
        return cmd_bench(args)
    except Clp2pError as exc:
        print(f"clp2p: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
