"""Edit parameters: step windows, presets and their text specs (``F``, ``A:B``, ``word=F,...``).

A step window ``(start, end)`` holds fractions of the denoising schedule. With ``n`` steps, step
``i`` (0-based) is inside when ``floor(start * n) <= i < floor(end * n)``; the same rule is used
for cross-attention, self-attention and V injection, so ``0.2`` of 50 steps is steps 0..9.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from clp2p.errors import Clp2pError
from clp2p.model import limits

RESOLVED_KINDS = ("swap", "refine", "reweight")  # what an edit is once ``auto`` is resolved
EDIT_KINDS = ("auto", *RESOLVED_KINDS)
V_LAYER_KINDS = ("self", "cross", "both")


def step_index(fraction: float, steps: int) -> int:
    # round first so that 0.3 * 10 = 3.0000000000000004 counts as 3
    return math.floor(round(fraction * steps, 9))


def _integer(obj: object, name: str) -> None:
    """Store ``obj.name`` as an int: a whole number written as a float (``4.0``) is one; any
    other non-integer is refused."""
    value = getattr(obj, name)
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return
    if isinstance(value, float) and value.is_integer():
        object.__setattr__(obj, name, int(value))
        return
    raise Clp2pError.about("{" + name + "} {value!r}: give a whole number", value=value)


@dataclass(frozen=True)
class StepWindow:
    """A window of denoising steps as fractions of the schedule, ``0 <= start <= end <= 1``."""

    start: float = 0.0
    end: float = 0.0

    def __post_init__(self) -> None:
        if not (0.0 <= self.start <= 1.0 and 0.0 <= self.end <= 1.0):
            raise Clp2pError.about(
                "step window {a:g}:{b:g} is outside [0, 1]: "
                "give fractions of the schedule, e.g. 0.8 or 0.1:0.6",
                a=self.start,
                b=self.end,
            )
        if self.start > self.end:
            raise Clp2pError.about(
                "step window {a:g}:{b:g} starts after it ends: write A:B with A <= B",
                a=self.start,
                b=self.end,
            )

    def contains(self, step: int, steps: int) -> bool:
        return step_index(self.start, steps) <= step < step_index(self.end, steps)

    @property
    def empty(self) -> bool:
        return self.end <= self.start

    def spec(self) -> str:
        return f"{self.end:g}" if self.start == 0 else f"{self.start:g}:{self.end:g}"

    @classmethod
    def parse(cls, text: str, field: str = "window", word: str = "") -> StepWindow:
        """``F`` or ``A:B``; errors name ``field`` (and ``word`` of a per-word window)."""
        text = text.strip()
        what = "{" + field + "}" + (" {word}" if word else "")
        try:
            if ":" in text:
                a, b = text.split(":", 1)
                return cls(float(a), float(b))
            return cls(0.0, float(text))
        except ValueError as exc:
            if isinstance(exc, Clp2pError):
                raise exc.prefixed(what + ": ", word=word) from None
            raise Clp2pError.about(
                what + " '{text}' is not a step window: write a fraction F (e.g. 0.8) "
                "or a range A:B (e.g. 0.1:0.6)",
                word=word,
                text=text,
            ) from None


@dataclass(frozen=True)
class CrossWindow:
    """Cross-attention injection window: a default for every token, and optional per-word
    windows (words of the target prompt), as in prompt-to-prompt's ``{"default_": .., word: ..}``.
    """

    default: StepWindow = StepWindow()
    words: tuple[tuple[str, StepWindow], ...] = ()

    def spec(self) -> str:
        parts = [self.default.spec()] + [f"{w}={win.spec()}" for w, win in self.words]
        return ",".join(parts)

    @classmethod
    def parse(cls, text: str, default: StepWindow | None = None) -> CrossWindow:
        """Parse ``F``, ``A:B`` or ``[F,]word=F,word=A:B``; a missing default keeps ``default``."""
        base = default if default is not None else StepWindow()
        words: list[tuple[str, StepWindow]] = []
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            if "=" in item:
                word, win = item.split("=", 1)
                if not word.strip():
                    raise Clp2pError.about(
                        "{cross} item '{item}' has no word before '='", item=item
                    )
                words.append((word.strip(), StepWindow.parse(win, "cross", word.strip())))
            else:
                base = StepWindow.parse(item, "cross")
        return cls(base, tuple(words))


@dataclass(frozen=True)
class EditParams:
    """Every injection parameter of one edit (one target branch against its source).

    ``kind``: ``swap`` (AttentionReplace), ``refine`` (AttentionRefine), ``reweight`` (re-weight
    alone: the target prompt equals the source) or ``auto`` (swap when the word counts match,
    refine otherwise; resolved before rendering). ``reweight`` scales may also be given with
    swap and refine, chained as in prompt-to-prompt.
    ``self_res``: self-attention injection only in layers whose attention map has at most
    ``self_res x self_res`` pixels; ``None`` means every layer.
    ``v_blend`` (beta): inside ``v_window`` the target's attention uses
    ``V = (1 - beta) * V_target + beta * V_source`` in the ``v_layers`` kind of layers.
    ``k``: local-blend silhouette threshold; 0 disables local blending.
    ``inject_uncond``: also edit the unconditional half of classifier-free guidance
    (prompt-to-prompt edits only the conditional half).
    """

    kind: str = "auto"
    cross: CrossWindow = CrossWindow(StepWindow(0.0, 0.2))
    self_window: StepWindow = StepWindow(0.0, 0.8)
    self_res: int | None = 16
    v_window: StepWindow = StepWindow()
    v_blend: float = 0.0
    v_layers: str = "self"
    k: float = 0.0
    blend_words: tuple[str, ...] = ()
    reweight: tuple[tuple[str, float], ...] = ()
    inject_uncond: bool = False
    preset: str = field(default="cl-p2p", compare=False)

    def __post_init__(self) -> None:
        if self.kind not in EDIT_KINDS:
            raise Clp2pError.about(
                "{kind} '{value}' is unknown: use one of {kinds}",
                value=self.kind,
                kinds=", ".join(EDIT_KINDS),
            )
        if not 0.0 <= self.k <= 1.0:
            raise Clp2pError.about(
                "{k} {value:g} is outside [0, 1]: the silhouette threshold is a fraction",
                value=self.k,
            )
        if not 0.0 <= self.v_blend <= 1.0:
            raise Clp2pError.about("{v_blend} {value:g} is outside [0, 1]", value=self.v_blend)
        if self.v_layers not in V_LAYER_KINDS:
            raise Clp2pError.about(
                "{v_layers} '{value}': use one of {kinds}",
                value=self.v_layers,
                kinds=", ".join(V_LAYER_KINDS),
            )
        _integer(self, "self_res")
        if self.self_res is not None and not 1 <= self.self_res <= limits.MAX_SELF_RES:
            raise Clp2pError.about(
                "{self_res} {value}: give a positive side length up to {limit} or 'all'",
                value=self.self_res,
                limit=limits.MAX_SELF_RES,
            )
        for word, scale in self.reweight:
            limits.text("reweight", word, limits.MAX_WORD_CHARS)
            if not abs(limits.finite("reweight", scale)) <= limits.MAX_REWEIGHT:
                raise Clp2pError.about(
                    "{reweight} {word}={value:g}: give a scale in [-{limit:g}, {limit:g}]",
                    word=word,
                    value=scale,
                    limit=limits.MAX_REWEIGHT,
                )
        for word in self.blend_words:
            limits.text("blend_words", word, limits.MAX_WORD_CHARS)
        if self.v_blend > 0 and self.v_window.empty:
            raise Clp2pError.about(
                "{v_blend} is set but the {v_window} window is empty: give e.g. {v_window} 0.5"
            )

    def with_(self, **changes: object) -> EditParams:
        return replace(self, **changes)

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "preset": self.preset,
            "cross": self.cross.spec(),
            "self": self.self_window.spec(),
            "self_res": "all" if self.self_res is None else self.self_res,
            "v_inject": self.v_window.spec(),
            "v_blend": self.v_blend,
            "v_layers": self.v_layers,
            "k": self.k,
            "blend_words": list(self.blend_words),
            "reweight": {w: s for w, s in self.reweight},
            "inject_uncond": self.inject_uncond,
        }

    @classmethod
    def from_json(cls, data: dict) -> EditParams:
        res = data.get("self_res", 16)
        return cls(
            kind=data.get("kind", "auto"),
            preset=data.get("preset", "custom"),
            cross=CrossWindow.parse(str(data.get("cross", "0.2"))),
            self_window=StepWindow.parse(str(data.get("self", "0.8")), "self_window"),
            self_res=None if res == "all" else int(res),
            v_window=StepWindow.parse(str(data.get("v_inject", "0")), "v_window"),
            v_blend=float(data.get("v_blend", 0.0)),
            v_layers=data.get("v_layers", "self"),
            k=float(data.get("k", 0.0)),
            blend_words=tuple(data.get("blend_words", ())),
            reweight=tuple((str(w), float(s)) for w, s in dict(data.get("reweight", {})).items()),
            inject_uncond=bool(data.get("inject_uncond", False)),
        )


PRESETS: dict[str, EditParams] = {
    # The prompt-to-prompt paper defaults as the CL P2P study quotes them.
    "p2p": EditParams(
        cross=CrossWindow(StepWindow(0.0, 0.8)),
        self_window=StepWindow(0.0, 0.2),
        self_res=16,
        k=0.3,
        preset="p2p",
    ),
    # CL P2P: no local blend, short cross-attention injection, long self-attention injection.
    "cl-p2p": EditParams(
        cross=CrossWindow(StepWindow(0.0, 0.2)),
        self_window=StepWindow(0.0, 0.8),
        self_res=16,
        k=0.0,
        preset="cl-p2p",
    ),
}


def preset(name: str) -> EditParams:
    try:
        return PRESETS[name]
    except KeyError:
        raise Clp2pError(f"preset '{name}' is unknown: use one of {', '.join(PRESETS)}") from None


@dataclass(frozen=True)
class RenderSettings:
    """Sampling settings shared by every branch of one render."""

    seed: int = 0
    steps: int = 50
    guidance: float = 7.5
    width: int | None = None  # None: the model's native size
    height: int | None = None

    def __post_init__(self) -> None:
        for name in ("seed", "steps", "width", "height"):
            _integer(self, name)
        if self.steps < 1:
            raise Clp2pError.about(
                "{steps} {value}: give at least 1 denoising step", value=self.steps
            )
        if self.steps > limits.MAX_STEPS:
            raise Clp2pError.about(
                "{steps} {value}: give at most {limit} denoising steps",
                value=self.steps,
                limit=limits.MAX_STEPS,
            )
        if self.seed < 0 or self.seed > limits.MAX_SEED:
            raise Clp2pError.about("{seed} {value}: give a seed in [0, 2**63)", value=self.seed)
        guidance = limits.finite("guidance", self.guidance)
        if not 0 <= guidance <= limits.MAX_GUIDANCE:
            raise Clp2pError.about(
                "{guidance} {value:g}: give a guidance scale in [0, {limit:g}]",
                value=guidance,
                limit=limits.MAX_GUIDANCE,
            )
        object.__setattr__(self, "guidance", guidance)
        for name, value in (("width", self.width), ("height", self.height)):
            if value is not None and value <= 0:
                raise Clp2pError.about(
                    "{" + name + "} {value}: give a positive size in pixels", value=value
                )
            if value is not None and not limits.MIN_SIZE <= value <= limits.MAX_SIZE:
                raise Clp2pError.about(
                    "{" + name + "} {value}: give a size from {lo} to {hi} pixels",
                    value=value,
                    lo=limits.MIN_SIZE,
                    hi=limits.MAX_SIZE,
                )

    def at_size(self, native: int, multiple: int) -> RenderSettings:
        """The settings with a missing width or height set to a model's ``native`` size;
        sizes must be multiples of the model's ``multiple`` (VAE and UNet downsampling)."""
        width, height = self.width or native, self.height or native
        for name, value in (("width", width), ("height", height)):
            if value % multiple:
                lo = max(multiple, value // multiple * multiple)
                raise Clp2pError.about(
                    "{" + name + "} {value} is not a multiple of {multiple} for this model: "
                    "use {lo} or {hi}",
                    value=value,
                    multiple=multiple,
                    lo=lo,
                    hi=lo + multiple,
                )
        return replace(self, width=width, height=height)

    def to_json(self) -> dict:
        return {
            "seed": self.seed,
            "steps": self.steps,
            "guidance": self.guidance,
            "width": self.width,
            "height": self.height,
        }


RECORDED = -1  # the source index of a branch edited from a recorded branch (a BranchRecord)


@dataclass(frozen=True)
class Branch:
    """One image of a render: a prompt, and for an edit the branch it is edited from
    (``source``, a lower index) with the edit's parameters. Branch 0 is the root."""

    prompt: str
    source: int | None = None
    edit: EditParams | None = None
