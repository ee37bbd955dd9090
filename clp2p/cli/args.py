"""Argument groups and conversions that several commands share: the model, the sampling
settings, the edit's injection flags. Flags are named after the model's fields (each flag's
``dest`` is the field it sets), so an error about a field reads as the flag the user typed.

Defaults and choices come from the model's own types and constants, never retyped here."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from clp2p.errors import Clp2pError
from clp2p.model import limits
from clp2p.model.params import (
    BLEND_NORM_HELP,
    BLEND_PIXELS_HELP,
    BLEND_START_HELP,
    REFINE_PADS,
    V_LAYER_KINDS,
    CrossWindow,
    EditParams,
    StepWindow,
    parse_layers,
)
from clp2p.model.presets import PRESETS, preset
from clp2p.model.settings import SCHEDULERS, RenderSettings

SETTINGS = RenderSettings()  # the sampling defaults


def finish(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int]) -> None:
    """Make ``parser`` a command: ``run(args)`` carries it out, its flags name the fields they
    set in error messages, and a flag it cannot parse is one line, as every other error."""
    flags = {}
    for action in parser._actions:  # every argument of this (sub)command
        longs = [o for o in action.option_strings if o.startswith("--")]
        if longs and action.dest != "help":
            flags[action.dest] = longs[0]
    parser.set_defaults(run=run, field_flags=flags)

    one_line_errors(parser)


def one_line_errors(parser: argparse.ArgumentParser) -> None:
    """Errors of ``parser`` and of every parser below it are one line, as every other error
    (argparse's own print the usage first)."""

    def error(message: str):
        hint = "" if ": give " in message else f" (see '{parser.prog} --help')"
        print(f"clp2p: error: {message}{hint}", file=sys.stderr)
        raise SystemExit(2)

    parser.error = error
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                one_line_errors(child)


def whole_number(text: str) -> int:
    """An argparse type: an integer, refused in words that say what to write."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a whole number: give e.g. 50") from None


def number(text: str) -> float:
    """An argparse type: a number (range and finiteness are the model's to check)."""
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"'{text}' is not a number: give e.g. 0.5") from None


def check_text(field: str, value: str, limit: int = limits.MAX_PROMPT_CHARS) -> str:
    """``value`` of ``field`` (e.g. a prompt), refused before anything loads when a session
    could not store it (see :func:`clp2p.model.limits.text`)."""
    return limits.text(field, value, limit)


def check_output(out: Path) -> None:
    """Refuse, before a model loads, an ``--out`` that could not be written after the render:
    one under a regular file, or in a folder this user may not write to (the folder it goes
    in, or the nearest one that exists when folders are to be made)."""
    folder = out.parent
    while not folder.exists() and not folder.is_symlink() and folder != folder.parent:
        folder = folder.parent  # exists() is False under a regular file too
    if not folder.is_dir():
        raise Clp2pError(
            f"--out '{out}' is under '{folder}', which is not a folder: give a path in a folder"
        )
    for place in (folder, out) if out.is_dir() else (folder,):
        if not os.access(place, os.W_OK | os.X_OK):
            raise Clp2pError(
                f"--out '{out}': cannot write in '{place}': give a folder you can write to"
            )


def add_model_args(p: argparse.ArgumentParser, adapters: bool = True) -> None:
    """``--model``, ``--device``, ...; ``adapters``: also ``--lora`` and ``--embedding``."""
    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        help="'shapes' (the embedded model, default when installed), a diffusers folder, "
        "a .safetensors/.ckpt SD 1.x/2.x or SDXL file, or a Hugging Face repo id in the local "
        "cache",
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
    if adapters:
        g.add_argument(
            "--lora",
            action="append",
            default=[],
            metavar="FILE[:SCALE]",
            help="load a LoRA (.safetensors) at SCALE (default 1); repeatable",
        )
        g.add_argument(
            "--embedding",
            action="append",
            default=[],
            metavar="FILE[:TOKEN]",
            help="load a textual-inversion embedding as TOKEN (default <file name>); repeatable",
        )


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument("--seed", type=whole_number, default=SETTINGS.seed)
    g.add_argument(
        "--steps",
        type=whole_number,
        help=f"denoising steps (default: the model's; {SETTINGS.steps} for Stable Diffusion)",
    )
    g.add_argument(
        "--guidance",
        type=number,
        help=f"guidance scale (default: the model's; {SETTINGS.guidance:g} for Stable Diffusion)",
    )
    g.add_argument("--width", type=whole_number, default=SETTINGS.width)
    g.add_argument("--height", type=whole_number, default=SETTINGS.height)
    g.add_argument(
        "--negative",
        default=SETTINGS.negative,
        metavar="PROMPT",
        help="negative prompt: the unconditional half of guidance for every branch",
    )
    g.add_argument(
        "--scheduler",
        choices=SCHEDULERS,
        default=SETTINGS.scheduler,
        help="sampler (default ddim, the only one for imported pictures)",
    )
    g.add_argument("--karras", action="store_true", help="Karras sigmas (dpm++2m and euler)")


def add_injection_args(p: argparse.ArgumentParser) -> None:
    """The edit's injection flags (``clp2p edit`` and ``clp2p session add``)."""
    g = p.add_argument_group("injection")
    g.add_argument("--reweight", nargs="+", default=[], metavar="WORD=SCALE")
    g.add_argument("--preset", default=EditParams().preset, choices=tuple(PRESETS))
    g.add_argument("--k", type=number, help="local-blend silhouette threshold in [0, 1]")
    g.add_argument(
        "--blend-start",
        type=number,
        help=BLEND_START_HELP,
    )
    g.add_argument(
        "--blend-pixels",
        action=argparse.BooleanOptionalAction,
        help=BLEND_PIXELS_HELP,
    )
    g.add_argument("--blend-norm", action=argparse.BooleanOptionalAction, help=BLEND_NORM_HELP)
    g.add_argument("--cross", help="cross-attention window: F, A:B or [F,]word=F,...")
    g.add_argument("--self", dest="self_window", help="self-attention window: F or A:B")
    g.add_argument("--self-res", help="self-injection only in grids up to NxN, or 'all'")
    g.add_argument(
        "--self-layers",
        help="self-injection only in self-attention layers A:B (counted from 1), or 'all'",
    )
    g.add_argument("--v-inject", dest="v_window", help="V value injection window: F or A:B")
    g.add_argument("--v-blend", type=number, help="V blend beta in [0, 1]")
    g.add_argument("--v-layers", choices=V_LAYER_KINDS)
    g.add_argument("--blend-words", nargs="+", default=[], metavar="W")
    g.add_argument(
        "--inject-uncond",
        action="store_true",
        help="also edit the unconditional half of classifier-free guidance",
    )
    g.add_argument(
        "--refine-pad",
        choices=REFINE_PADS,
        help="a refinement's padding after the end token: reference (default; position p takes "
        "the source's position p, as prompt-to-prompt) or shifted (by the length difference)",
    )


# the injection flags that change a preset's value (``session add --kind cycle`` keeps the
# reversed edit's parameters unless one of them is given)
INJECTION_FIELDS = (
    "k",
    "blend_start",
    "blend_pixels",
    "blend_norm",
    "cross",
    "self_window",
    "self_res",
    "self_layers",
    "v_window",
    "v_blend",
    "v_layers",
)


def edit_params(args: argparse.Namespace, kind: str = "auto", xl: bool = False) -> EditParams:
    """The edit parameters from the preset (its SDXL form for an SDXL model, ``xl``) and the
    flags that override it."""
    base = preset(args.preset, xl)
    changes: dict[str, object] = {"kind": kind}
    if args.k is not None:
        changes["k"] = args.k
    if args.blend_start is not None:
        changes["blend_start"] = args.blend_start
    if args.blend_pixels is not None:
        changes["blend_pixels"] = args.blend_pixels
    if args.blend_norm is not None:
        changes["blend_norm"] = args.blend_norm
    if args.cross is not None:
        changes["cross"] = CrossWindow.parse(args.cross, base.cross.default)
    if args.self_window is not None:
        changes["self_window"] = StepWindow.parse(args.self_window, "self_window")
    if args.self_res is not None:
        changes["self_res"] = _parse_res(args.self_res)
    if args.self_layers is not None:
        changes["self_layers"] = parse_layers(args.self_layers)
    if args.v_window is not None:
        changes["v_window"] = StepWindow.parse(args.v_window, "v_window")
    if args.v_blend is not None:
        changes["v_blend"] = args.v_blend
    if args.v_layers is not None:
        changes["v_layers"] = args.v_layers
    if args.blend_words:
        changes["blend_words"] = tuple(args.blend_words)
    if args.reweight:
        changes["reweight"] = tuple(_parse_reweight(r) for r in args.reweight)
    if args.inject_uncond:
        changes["inject_uncond"] = True
    if args.refine_pad is not None:
        changes["refine_pad"] = args.refine_pad
    return base.with_(**changes)


def _parse_res(text: str) -> int | None:
    if text == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise Clp2pError.about(
            "{self_res} '{text}': give a side length such as 16 or 32, or 'all'", text=text
        ) from None


def _parse_reweight(item: str) -> tuple[str, float]:
    word, sep, value = item.partition("=")
    try:
        if not sep or not word:
            raise ValueError
        return word, float(value)
    except ValueError:
        raise Clp2pError.about(
            "{reweight} '{item}': write WORD=SCALE, e.g. smiling=2 or red=-1", item=item
        ) from None


def settings_from(args: argparse.Namespace, model: str | None = None) -> RenderSettings:
    """The sampling flags, and for those not given the model's recommended values (its card;
    Stable Diffusion's usual ones for a model without)."""
    from clp2p.model.card import card_of

    card = card_of(model or model_name(args))
    given = {"steps": args.steps, "guidance": args.guidance}
    if args.width is not None or args.height is not None:  # a size given: no card size
        given |= {"width": args.width, "height": args.height}
        card = replace(card, sampling=tuple(kv for kv in card.sampling if kv[0] != "size"))
    return card.settings(
        seed=args.seed,
        **given,
        negative=args.negative,
        scheduler=args.scheduler,
        karras=args.karras,
    )


def model_name(args: argparse.Namespace) -> str:
    from clp2p.resources import SHAPES, shapes_model_dir

    if args.model:
        return args.model
    if (shapes_model_dir() / "model_index.json").is_file():
        return SHAPES
    raise Clp2pError("give --model: a diffusers folder, a .safetensors/.ckpt file or a repo id")


def adapters_of(args: argparse.Namespace) -> tuple:
    """The LoRA and embedding files of ``--lora`` / ``--embedding``, read and hashed."""
    from clp2p.workflows.adapters import adapters_from

    return adapters_from(getattr(args, "lora", []) or [], getattr(args, "embedding", []) or [])


def engine_from(args: argparse.Namespace, model: str | None = None, adapters=None):
    """The engine of ``--model`` (or ``model``) on ``--device`` / ``--dtype``, with the
    adapters of ``--lora`` / ``--embedding`` (or ``adapters``)."""
    from clp2p.engine.engine import Engine

    return Engine.load(
        model or model_name(args),
        args.device,
        args.dtype,
        allow_download=args.allow_download,
        prediction_type=args.prediction_type,
        adapters=adapters_of(args) if adapters is None else adapters,
    )
