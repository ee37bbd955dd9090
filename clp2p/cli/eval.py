"""``clp2p eval shapes``: the command line of :mod:`clp2p.shapes.evaluate` and of the picture
cycle (:mod:`clp2p.shapes.picture_cycle`): arguments, JSON, figures and markdown tables."""

from __future__ import annotations

from pathlib import Path

from clp2p.cli.args import adapters_of, add_model_args, finish
from clp2p.cli.sweep import add_run_args, pool_from, spec_from, start_early
from clp2p.model.params import BLEND_NORM_HELP, BLEND_PIXELS_HELP
from clp2p.model.settings import RenderSettings
from clp2p.shapes import seeds
from clp2p.shapes.evaluate import (
    V_LAYERS,
    VSetting,
    run_edit,
    run_sweep,
    timed,
)
from clp2p.shapes.scoring import KINDS, make_pairs
from clp2p.shapes.two_objects import check_kinds, make_two_pairs

DEFAULT_PAIRS = {"edit": 60, "sweep": 12, "picture-cycle": 36, "localise": 60}
TASKS = ("generate", "localise", "edit", "sweep", "picture-cycle")


def add_parser(sub) -> None:
    """``clp2p eval shapes --task generate|edit|sweep|picture-cycle``."""
    p = sub.add_parser("eval", help="evaluations against a ground truth")
    esub = p.add_subparsers(dest="eval", required=True)
    s = esub.add_parser("shapes", help="generation and edits scored on the shapes world")
    s.add_argument("--task", required=True, choices=TASKS)
    s.add_argument(
        "--samples", type=int, default=200, help="generate: pictures of each world (seeds)"
    )
    s.add_argument(
        "--pairs",
        type=int,
        help="edit / sweep / picture-cycle: edit pairs (default 60 / 12 / 36); "
        "localise: pictures (default 60)",
    )
    s.add_argument(
        "--objects",
        type=int,
        choices=(1, 2),
        default=1,
        help="edit / sweep / picture-cycle: edit one-object pictures, or one object of "
        "two-object pictures",
    )
    _add_edit_args(s)
    s.add_argument("--json", help="write the results to this file")
    s.add_argument("--figures", help="write the figures (eval-*.png) into this folder")
    s.add_argument("--steps", type=int, help="DDIM steps (default: the model's)")
    s.add_argument("--guidance", type=float, help="CFG scale (default: the model's)")
    add_model_args(s)
    add_run_args(s)
    finish(s, cmd_eval)
    # many renders in a row: see clp2p.cli.main; Ray's workers start before torch loads here
    s.set_defaults(passive_threads=True, early=_early)


def _add_edit_args(s) -> None:
    """The edit, V and local-blend arguments of ``clp2p eval shapes``."""
    s.add_argument(
        "--k",
        type=float,
        default=None,
        help="edit --objects 2: local blend's k for the +lb methods (default: the sweep's pick)",
    )
    s.add_argument(
        "--tuning",
        action="store_true",
        help="edit: score the tuning pairs instead of the held-out ones",
    )
    s.add_argument(
        "--search-pairs",
        type=int,
        default=0,
        help="edit: first search the V setting on this many other pairs (e.g. 12); "
        "picture-cycle: run the V grid on this many pairs instead of the held-out check",
    )
    s.add_argument("--v-inject", type=float, default=VSetting.window, help="V window end")
    s.add_argument("--v-blend", type=float, default=VSetting.blend, help="V beta")
    s.add_argument("--v-layers", choices=V_LAYERS, default=VSetting.layers)
    s.add_argument(
        "--v-settings",
        nargs="+",
        metavar="WINDOW/BETA/LAYERS",
        help="picture-cycle: the V settings to check on the held-out pairs (e.g. 0.2/0.3/both)",
    )
    s.add_argument(
        "--kinds",
        nargs="+",
        choices=KINDS,
        help="edit: only these edit kinds (default: every kind of the world, taking turns; "
        "two-object pictures have colour and shape)",
    )
    s.add_argument("--blend-pixels", action="store_true", help="sweep: " + BLEND_PIXELS_HELP)
    s.add_argument("--blend-norm", action="store_true", help="sweep: " + BLEND_NORM_HELP)


def _v_setting(text: str) -> VSetting:
    """``0.2/0.3/both`` -> VSetting(0.2, 0.3, "both"); a clear error otherwise."""
    from clp2p.errors import Clp2pError

    parts = text.split("/")
    try:
        window, blend, layers = float(parts[0]), float(parts[1]), parts[2]
    except (IndexError, ValueError):
        raise Clp2pError(
            f"--v-settings {text!r}: write WINDOW/BETA/LAYERS, e.g. 0.2/0.3/both"
        ) from None
    if len(parts) != 3 or layers not in V_LAYERS or not (0 < window <= 1 and 0 < blend <= 1):
        raise Clp2pError(
            f"--v-settings {text!r}: window and beta in (0, 1], layers one of {', '.join(V_LAYERS)}"
        )
    return VSetting(window, blend, layers)


def write_json(path: Path, result: dict) -> None:
    from clp2p import atomic

    drop = ("examples", "images", "samples")
    clean = {k: v for k, v in result.items() if k not in drop}
    if "two" in clean:
        clean["two"] = {k: v for k, v in clean["two"].items() if k not in drop}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_json(path, clean, indent=1)


def figure_stem(result: dict) -> str:
    """The figures' name suffix: each world and blend mode keeps its own files, so a
    two-object, source-norm or pixel-kept run never overwrites a one-object run's figures."""
    two = "-two" if result.get("objects", 1) == 2 else ""
    norm = "-norm" if result.get("blend_norm") else ""
    return two + norm + ("-px" if result.get("blend_pixels") else "")


def write_figures(result: dict, folder: Path) -> list[Path]:
    from clp2p.shapes import figures

    task, stem = result["task"], figure_stem(result)
    if task == "generate":
        from clp2p.shapes import check

        out = [folder / "eval-generate.png", folder / "eval-generate-two.png"]
        check.save_grid(result["samples"], out[0])
        two = result["two"]
        figures.two_object_grid(two["images"], two["captions"], two["rows"], out[1])
        return out
    if task in ("picture-cycle", "localise"):
        return []
    if task == "edit":
        out = [folder / f"eval-edit{stem}.png", folder / f"eval-examples{stem}.png"]
        figures.edit_bars(result["table"], out[0])
        figures.edit_examples(result["examples"], list(result["methods"]), out[1])
        return out
    out = [folder / f"eval-sweep{stem}.png", folder / f"eval-sweep{stem}-grid.png"]
    figures.sweep_heatmaps(result, out[0])
    figures.sweep_grid(result, result["examples"], out[1])
    return out


def _report(result: dict) -> str:
    from clp2p.shapes import report

    if result["task"] == "generate":
        return report.generate_table(result)
    if result["task"] == "localise":
        return report.localise_table(result)
    if result["task"] == "edit":
        text = report.edit_table(result["table"])
        if result["v_search"]:
            text = report.v_search_table(result["v_search"]) + "\n\n" + text
        return text
    if result["task"] == "picture-cycle":
        from clp2p.shapes.picture_cycle import picture_cycle_table

        return picture_cycle_table(result)
    return report.sweep_tables(result)


def _early(args) -> None:
    if args.model is None:
        args.model = "shapes"
    from clp2p.errors import Clp2pError

    if args.task == "picture-cycle" and args.ray:
        raise Clp2pError("--ray: the picture cycle runs in this process: drop --ray")
    if args.kinds and args.task != "edit":
        raise Clp2pError(f"--kinds: only --task edit takes edit kinds ({args.task} does not)")
    if args.kinds and args.objects == 2:
        check_kinds(tuple(args.kinds))  # before the model loads
    start_early(args, args.model, adapters_of(args))


def cmd_eval(args) -> int:
    """Run one task, print its markdown table, write JSON and figures when asked."""
    with pool_from(args, spec_from(args, args.model)) as pool:
        result = _run_task(args, pool)
    result["model"] = args.model
    print(_report(result))
    print(f"\n{args.task}: {result['seconds']:.0f} s on {pool.where}")
    if args.json:
        write_json(Path(args.json), result)
        print(f"wrote {args.json}")
    if args.figures:
        for path in write_figures(result, Path(args.figures)):
            print(f"wrote {path}")
    return 0


def _run_task(args, pool) -> dict:
    """The task of ``--task`` on ``pool``'s workers."""
    # Many branches per render here: one batch is faster, and scores do not need the
    # bit-exactness across renders that sessions rely on.
    batch = True
    from clp2p.model.card import card_of

    # the model's recommended sampling (the shapes model's card: 30 steps, guidance 4)
    settings = card_of(args.model).settings(seed=0, steps=args.steps, guidance=args.guidance)
    task = args.task
    if task == "generate":
        from clp2p.shapes.generation import run_generate

        result = timed(lambda: run_generate(pool, args.samples, settings))
    elif task == "localise":
        from clp2p.shapes.generation import run_localise

        count = args.pairs or DEFAULT_PAIRS["localise"]
        result = timed(lambda: run_localise(pool, count, settings))
    elif task == "edit":
        held_out = seeds.TWO_EDIT_HELD_OUT if args.objects == 2 else seeds.EDIT_HELD_OUT
        tuning = seeds.TWO_TUNING if args.objects == 2 else seeds.EDIT_TUNING
        where = tuning if args.tuning else held_out
        kinds = tuple(dict.fromkeys(args.kinds)) if args.kinds else None
        pairs = _pairs(args, args.pairs or DEFAULT_PAIRS["edit"], where, kinds)
        search = None
        if args.search_pairs:
            where = seeds.TWO_TUNING if args.objects == 2 else seeds.V_SEARCH
            search = _pairs(args, args.search_pairs, where)
        v = VSetting(args.v_inject, args.v_blend, args.v_layers)
        k = _blend_k(args)
        result = timed(
            lambda: run_edit(pool, pairs, settings, v, search, batch_branches=batch, blend_k=k)
        )
    elif task == "picture-cycle":
        result = _picture_cycle(args, pool.worker.engine, settings, batch)
    else:
        where = seeds.TWO_TUNING if args.objects == 2 else seeds.EDIT_TUNING
        pairs = _pairs(args, args.pairs or DEFAULT_PAIRS["sweep"], where, ("colour",))
        pixels, norm = args.blend_pixels, args.blend_norm
        result = timed(lambda: run_sweep(pool, pairs, settings, batch, pixels=pixels, norm=norm))
    result["settings"] = {"steps": settings.steps, "guidance": settings.guidance}
    result["objects"] = args.objects
    return result


def _pairs(args, count: int, where: seeds.Range, kinds: tuple[str, ...] | None = None) -> list:
    """``count`` edit pairs of the world ``--objects`` names, from the seed range ``where``."""
    kw = {"kinds": kinds} if kinds else {}
    if args.objects == 2:
        return make_two_pairs(count, where.first, where.deck, **kw)
    return make_pairs(count, seed=where.deck, first_seed=where.first, **kw)


def _blend_k(args) -> float | None:
    """The k of the edit table's local-blend methods: ``--k``, else for two-object pairs the
    sweep's pick; one-object edits have none unless ``--k`` asks."""
    from clp2p.shapes.evaluate import TWO_BLEND_K

    if args.k is not None:
        return args.k
    return TWO_BLEND_K if args.objects == 2 else None


def _picture_cycle(args, engine, settings: RenderSettings, batch: bool) -> dict:
    from clp2p.shapes.picture_cycle import run_picture_cycle

    if args.search_pairs:  # the whole V grid on the search pairs
        where = seeds.TWO_TUNING if args.objects == 2 else seeds.PICTURE_SEARCH
        pairs = _pairs(args, args.search_pairs, where)
        return timed(lambda: run_picture_cycle(engine, pairs, settings, batch_branches=batch))
    # the given V setting on held-out pairs, other captions and noise
    where = seeds.TWO_PICTURE_CONFIRM if args.objects == 2 else seeds.PICTURE_CONFIRM
    pairs = _pairs(args, args.pairs or DEFAULT_PAIRS["picture-cycle"], where)
    candidates = [VSetting(args.v_inject, args.v_blend, args.v_layers)]
    if args.v_settings:
        candidates = [_v_setting(text) for text in args.v_settings]
    return timed(
        lambda: run_picture_cycle(engine, pairs, settings, candidates, batch_branches=batch)
    )
