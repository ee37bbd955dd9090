"""Sweeps and batches as plain data (no torch): the edit parameters a sweep may vary (the one
home of their names, how a value is written and what it changes), the grid of their values,
and the items a sweep or a batch manifest becomes.

An item is a small session: the chain of the node it edits (re-seeded when the sweep varies
the seed) and one new child, the edit to render. Its key is the hash of everything its image
depends on (:func:`~clp2p.model.session.chain_key`), so a sweep run again skips what it has
already rendered, and the child can join the session it came from as it is."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, replace
from itertools import product

from clp2p.errors import Clp2pError
from clp2p.model import limits
from clp2p.model.imported import DEFAULT_INNER_STEPS, DEFAULT_METHOD, FITS
from clp2p.model.params import (
    V_LAYER_KINDS,
    CrossWindow,
    EditParams,
    StepWindow,
    layers_spec,
    parse_layers,
)
from clp2p.model.presets import PRESETS, preset
from clp2p.model.session import Session, chain_key

MAX_ITEMS = 10_000  # items of one sweep or batch
SEED_AXIS = "seed"


def _number(text: str) -> float:
    try:
        return limits.finite("value", float(text))
    except ValueError:
        raise Clp2pError(f"'{text}' is not a number: give e.g. 0.3") from None


def _res(text: str) -> int | None:
    if text == "all":
        return None
    try:
        return int(text)
    except ValueError:
        raise Clp2pError(f"'{text}' is not a grid side: give e.g. 16, or 'all'") from None


def _choice(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        if text not in choices:
            raise Clp2pError(f"'{text}' is not one of {', '.join(choices)}")
        return text

    return parse


def _window(field: str) -> Callable[[str], StepWindow]:
    return lambda text: StepWindow.parse(text, field)


@dataclass(frozen=True)
class Axis:
    """A parameter a sweep varies: ``parse`` reads one value as typed, ``apply`` puts it in an
    edit (``xl``: the model is SDXL, for presets), ``show`` writes it back."""

    name: str
    help: str
    parse: Callable[[str], object]
    apply: Callable[[EditParams, object, bool], EditParams]
    show: Callable[[object], str] = str


def _preset(params: EditParams, name: object, xl: bool) -> EditParams:
    keep = {"kind": params.kind, "blend_words": params.blend_words, "reweight": params.reweight}
    return preset(str(name), xl).with_(**keep)


def _reweight(word: str) -> Callable[[EditParams, object, bool], EditParams]:
    def apply(params: EditParams, scale: object, xl: bool) -> EditParams:
        rest = tuple((w, s) for w, s in params.reweight if w != word)
        return params.with_(reweight=(*rest, (word, float(scale))))  # type: ignore[arg-type]

    return apply


def _window_spec(value: object) -> str:
    return value.spec() if isinstance(value, StepWindow) else str(value)


AXES: dict[str, Axis] = {
    a.name: a
    for a in (
        # a preset first: the parameters after it change the preset's values
        Axis("preset", f"a preset: {', '.join(PRESETS)}", _choice(tuple(PRESETS)), _preset),
        Axis(
            "k",
            "local-blend threshold in [0, 1]",
            _number,
            lambda p, v, xl: p.with_(k=v),
            "{:g}".format,
        ),
        Axis(
            "cross",
            "cross-attention window: F or A:B",
            _window("cross"),
            lambda p, v, xl: p.with_(cross=CrossWindow(v, p.cross.words)),
            _window_spec,
        ),
        Axis(
            "self",
            "self-attention window: F or A:B",
            _window("self_window"),
            lambda p, v, xl: p.with_(self_window=v),
            _window_spec,
        ),
        Axis(
            "self-res",
            "largest self-attention grid side, or all",
            _res,
            lambda p, v, xl: p.with_(self_res=v),
            lambda v: "all" if v is None else str(v),
        ),
        Axis(
            "self-layers",
            "self-attention layers A:B, or all",
            parse_layers,
            lambda p, v, xl: p.with_(self_layers=v),
            layers_spec,  # type: ignore[arg-type]
        ),
        Axis(
            "v",
            "V injection window: F or A:B",
            _window("v_window"),
            lambda p, v, xl: p.with_(v_window=v),
            _window_spec,
        ),
        Axis(
            "beta",
            "V blend beta in [0, 1]",
            _number,
            lambda p, v, xl: p.with_(v_blend=v),
            "{:g}".format,
        ),
        Axis(
            "v-layers",
            f"V injection layers: {', '.join(V_LAYER_KINDS)}",
            _choice(V_LAYER_KINDS),
            lambda p, v, xl: p.with_(v_layers=v),
        ),
    )
}
REWEIGHT_AXIS = "reweight:"  # reweight:WORD=1,2,4 varies one word's scale
AXIS_HELP = (
    "; ".join(f"{a.name}: {a.help}" for a in AXES.values())
    + f"; {REWEIGHT_AXIS}WORD: that word's re-weight scale"
)


def axis(name: str) -> Axis:
    """The axis ``name`` (``reweight:WORD`` for a word's scale); a clear error otherwise."""
    if name in AXES:
        return AXES[name]
    if name.startswith(REWEIGHT_AXIS) and name[len(REWEIGHT_AXIS) :].strip():
        word = name[len(REWEIGHT_AXIS) :].strip()
        limits.text("reweight", word, limits.MAX_WORD_CHARS)
        return Axis(name, f"re-weight scale of '{word}'", _number, _reweight(word), "{:g}".format)
    names = [*AXES, f"{REWEIGHT_AXIS}WORD", SEED_AXIS]
    raise Clp2pError(
        f"'{name[:40]}' is not a parameter a sweep varies: use one of {', '.join(names)}"
    )


@dataclass(frozen=True)
class Grid:
    """The axes of a sweep, in the order given, each with its values (as parsed)."""

    axes: tuple[tuple[str, tuple], ...] = ()

    @classmethod
    def parse(cls, specs: list[str]) -> Grid:
        """``["k=0,0.3", "cross=0.4,0.8"]``: one ``NAME=V1,V2,...`` per axis."""
        axes: list[tuple[str, tuple]] = []
        for spec in specs:
            name, sep, values = spec.partition("=")
            name = name.strip()
            if not sep or not values.strip():
                raise Clp2pError(f"grid '{spec[:60]}': write NAME=V1,V2,... e.g. k=0,0.3,0.6")
            if name == SEED_AXIS:
                raise Clp2pError("seeds are not a grid axis here: give them with the seeds list")
            ax = axis(name)
            if name in [n for n, _ in axes]:
                raise Clp2pError(f"grid: '{name}' is given twice: give each parameter once")
            parsed = []
            for text in values.split(","):
                try:
                    parsed.append(ax.parse(text.strip()))
                except Clp2pError as exc:
                    raise Clp2pError(f"grid {name}: {exc.render()}") from None
            axes.append((name, tuple(dict.fromkeys(parsed))))  # a repeated value once
        grid = cls(tuple(axes))
        if grid.size > MAX_ITEMS:
            raise Clp2pError(f"the grid has {grid.size} cells: give at most {MAX_ITEMS}")
        return grid

    @property
    def size(self) -> int:
        n = 1
        for _, values in self.axes:
            n *= len(values)
        return n

    def cells(self) -> list[tuple[tuple[str, object], ...]]:
        """Every combination, the last axis varying fastest."""
        names = [n for n, _ in self.axes]
        return [
            tuple(zip(names, combo, strict=True)) for combo in product(*(v for _, v in self.axes))
        ]

    def apply(self, params: EditParams, cell, xl: bool = False) -> EditParams:
        for name, value in sorted(cell, key=lambda nv: nv[0] != "preset"):
            try:
                params = axis(name).apply(params, value, xl)
            except Clp2pError as exc:
                raise Clp2pError(f"grid {name}={show(name, value)}: {exc.render()}") from None
        return params

    def to_json(self) -> dict:
        return {name: [show(name, v) for v in values] for name, values in self.axes}


def show(name: str, value: object) -> str:
    """A value of axis ``name`` as typed."""
    return str(value) if name == SEED_AXIS else axis(name).show(value)


def parse_seeds(text: str) -> tuple[int, ...]:
    """``0-3,7`` -> (0, 1, 2, 3, 7): seeds and ranges of seeds, separated by commas."""
    seeds: list[int] = []
    for part in (p.strip() for p in text.split(",")):
        a, sep, b = part.partition("-")
        try:
            lo = int(a)
            hi = int(b) if sep else lo
        except ValueError:
            raise Clp2pError(f"seeds '{part[:40]}': write seeds and ranges, e.g. 0-3,7") from None
        if not 0 <= lo <= hi <= limits.MAX_SEED or hi - lo >= MAX_ITEMS:
            raise Clp2pError(f"seeds '{part}': give seeds in [0, 2**63), ranges A-B with A <= B")
        seeds += range(lo, hi + 1)
    return tuple(dict.fromkeys(seeds))


@dataclass(frozen=True)
class Picture:
    """A batch item's picture to import (invert) before it is edited: the file as the
    manifest names it, resolved, and the inversion's settings."""

    path: str
    method: str = DEFAULT_METHOD
    fit: str = FITS[0]
    inner_steps: int = DEFAULT_INNER_STEPS


@dataclass(frozen=True)
class Item:
    """One render of a sweep or batch: node ``node_id`` of ``session`` (the edit), its
    ``values`` (axis or manifest field -> text, for the table), and for an import, the
    picture that becomes the root first."""

    session: Session
    node_id: str
    values: tuple[tuple[str, str], ...]
    picture: Picture | None = None

    @property
    def parent(self) -> str:
        return self.session.node(self.node_id).parent or ""

    def key(self, picture_hash: str = "") -> str:
        """What the item's image depends on (for an import: the picture's pixels too)."""
        base = chain_key(self.session, self.session.path(self.node_id))
        if self.picture is None:
            return base
        p = self.picture
        doc = [base, picture_hash, p.method, p.fit, p.inner_steps]
        return hashlib.sha256(json.dumps(doc).encode()).hexdigest()


def chain_session(session: Session, node_id: str, seed: int | None = None) -> Session:
    """``session`` cut to the chain of ``node_id`` (it and its ancestors), with ``seed``."""
    keep = {n.id for n in session.path(node_id)}
    nodes = tuple(n for n in session.nodes if n.id in keep)
    out = replace(session, nodes=nodes)
    if seed is not None and seed != session.settings.seed:
        if session.imported is not None:
            raise Clp2pError(
                "the session's root is an imported picture, whose noise is its inversion: "
                "sweep without seeds"
            )
        out = replace(out, settings=replace(session.settings, seed=seed))
        out = replace(
            out, nodes=tuple(replace(n, status="new", image=None, weights="") for n in out.nodes)
        )
    return out


def sweep_items(
    session: Session,
    node_id: str,
    target: str,
    params: EditParams,
    grid: Grid,
    seeds: tuple[int, ...] = (),
    xl: bool = False,
) -> list[Item]:
    """The items of a sweep of the edit ``node_id`` -> ``target`` over ``grid`` and ``seeds``
    (none: the session's seed); ``params`` is the edit before the grid changes it."""
    count = grid.size * max(1, len(seeds))
    if count > MAX_ITEMS:
        raise Clp2pError(f"the sweep has {count} items: give at most {MAX_ITEMS}")
    items = []
    for seed in seeds or (None,):
        base = chain_session(session, node_id, seed)
        for cell in grid.cells():
            edit, child = base.add_edit(node_id, target, grid.apply(params, cell, xl))
            values = tuple((n, show(n, v)) for n, v in cell)
            values += ((SEED_AXIS, str(edit.settings.seed)),)
            items.append(Item(edit, child, values))
    return items


def asked(
    session: Session,
    node_id: str,
    target: str,
    params: EditParams,
    grid: Grid,
    seeds: tuple[int, ...],
    session_file: str | None,
) -> dict:
    """What a sweep's results folder records it was asked (its ``sweep.json``)."""
    return {
        "kind": "sweep",
        "session": session_file,
        "node": node_id,
        "source": session.node(node_id).prompt,
        "target": target,
        "params": params.to_json(),
        "grid": grid.to_json(),
        "seeds": list(seeds),
        "model": session.model,
    }
