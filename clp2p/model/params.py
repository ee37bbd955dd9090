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
REFINE_PADS = ("reference", "shifted")  # see clp2p.model.align.refine_mapper


def step_index(fraction: float, steps: int) -> int:
    # round first so that 0.3 * 10 = 3.0000000000000004 counts as 3
    return math.floor(round(fraction * steps, 9))


REFERENCE_BLEND_START = 0.2
"""The fraction of the steps prompt-to-prompt's reference LocalBlend waits before it blends
(its ``start_blend``); clp2p's ``blend_start`` defaults to 0, blending from the first step."""

BLEND_START_HELP = (
    "the fraction of the steps before local blend begins, in [0, 1) (default 0: from the "
    f"first step; prompt-to-prompt's reference waits {REFERENCE_BLEND_START:g})"
)
"""What ``blend_start`` is, in the words the CLI's help and the studio's tooltip show."""

BLEND_PIXELS_HELP = (
    "local blend also keeps the source's pixels outside its mask (off: latents only, as "
    "prompt-to-prompt; the VAE's decoder can then still move pixels far from the edit)"
)
"""What ``blend_pixels`` does, in the words the CLI's help and the studio's tooltip show."""

BLEND_NORM_HELP = (
    "decode a local-blend edit with its source's decoder statistics, so that the VAE does not "
    "repaint the picture far from the mask (off: with its own, as prompt-to-prompt)"
)
"""What ``blend_norm`` does, in the words the CLI's help and the studio's tooltip show."""


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
    ``self_layers``: ``(a, b)``, self-attention injection only in the a-th to the b-th
    self-attention layer (counted from 1 in the order the UNet runs them, both included, as
    FreePromptEditing counts SD 1.x's 16); ``None`` means every layer. Both rules apply.
    ``v_blend`` (beta): inside ``v_window`` the target's attention uses
    ``V = (1 - beta) * V_target + beta * V_source`` in the ``v_layers`` kind of layers.
    ``k``: local-blend silhouette threshold; 0 disables local blending.
    ``blend_start``: the fraction of the steps before local blend begins: 0 blends after
    every step (the default), prompt-to-prompt's LocalBlend waits :data:`REFERENCE_BLEND_START`.
    ``blend_pixels``: local blend also keeps the source's pixels outside its last mask (the
    decoded edit is laid over the source's picture only where the mask lets it change). The
    latents outside the mask are the source's either way, but the VAE's decoder normalises
    over the whole latent, so a local change can still move far pixels; prompt-to-prompt
    blends latents only (False, the default).
    ``blend_norm``: a local-blend edit is decoded with the decoder statistics its source was
    decoded with (the mean and variance each of the VAE decoder's GroupNorms takes over the
    whole picture) instead of its own: outside the mask its latent is its source's, and so is
    its normalisation, so the decoder does not repaint the picture when the region inside the
    mask shifts the statistics; a chain of such edits is normalised as the picture it started
    from, so an edit back to it decodes to it (to float rounding). Prompt-to-prompt decodes
    each latent alone (False, the default).
    ``inject_uncond``: also edit the unconditional half of classifier-free guidance
    (prompt-to-prompt edits only the conditional half).
    ``refine_pad``: how a refinement maps the padding after the end token (see
    :func:`~clp2p.model.align.refine_mapper`): ``reference`` as prompt-to-prompt's reference
    implementation, or ``shifted`` (clp2p before session version 4).
    """

    kind: str = "auto"
    cross: CrossWindow = CrossWindow(StepWindow(0.0, 0.2))
    self_window: StepWindow = StepWindow(0.0, 0.8)
    self_res: int | None = 16
    self_layers: tuple[int, int] | None = None
    v_window: StepWindow = StepWindow()
    v_blend: float = 0.0
    v_layers: str = "self"
    k: float = 0.0
    blend_start: float = 0.0
    blend_pixels: bool = False
    blend_norm: bool = False
    blend_words: tuple[str, ...] = ()
    reweight: tuple[tuple[str, float], ...] = ()
    inject_uncond: bool = False
    refine_pad: str = "reference"
    preset: str = field(default="cl-p2p", compare=False)

    def __post_init__(self) -> None:
        if self.kind not in EDIT_KINDS:
            raise Clp2pError.about(
                "{kind} '{value}' is unknown: use one of {kinds}",
                value=self.kind,
                kinds=", ".join(EDIT_KINDS),
            )
        self._check_blend()
        if not 0.0 <= self.v_blend <= 1.0:
            raise Clp2pError.about("{v_blend} {value:g} is outside [0, 1]", value=self.v_blend)
        if self.refine_pad not in REFINE_PADS:
            raise Clp2pError.about(
                "{refine_pad} '{value}': use one of {kinds}",
                value=str(self.refine_pad)[:40],
                kinds=", ".join(REFINE_PADS),
            )
        if self.v_layers not in V_LAYER_KINDS:
            raise Clp2pError.about(
                "{v_layers} '{value}': use one of {kinds}",
                value=self.v_layers,
                kinds=", ".join(V_LAYER_KINDS),
            )
        limits.whole_field(self, "self_res")
        if self.self_res is not None and not 1 <= self.self_res <= limits.MAX_SELF_RES:
            raise Clp2pError.about(
                "{self_res} {value}: give a positive side length up to {limit} or 'all'",
                value=self.self_res,
                limit=limits.MAX_SELF_RES,
            )
        if self.self_layers is not None:
            a, b = self.self_layers
            if not (isinstance(a, int) and isinstance(b, int) and 1 <= a <= b <= limits.MAX_LAYER):
                raise Clp2pError.about(
                    "{self_layers} {a}:{b}: give layers A:B with 1 <= A <= B <= {limit}, or 'all'",
                    a=a,
                    b=b,
                    limit=limits.MAX_LAYER,
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

    def _check_blend(self) -> None:
        """Local blend's threshold and start are fractions; its switches are bools."""
        if not 0.0 <= self.k <= 1.0:
            raise Clp2pError.about(
                "{k} {value:g} is outside [0, 1]: the silhouette threshold is a fraction",
                value=self.k,
            )
        if not 0.0 <= self.blend_start < 1.0:
            raise Clp2pError.about(
                "{blend_start} {value:g} is outside [0, 1): give the fraction of the steps "
                "before local blend begins",
                value=self.blend_start,
            )
        for name in ("blend_pixels", "blend_norm"):
            value = getattr(self, name)
            if not isinstance(value, bool):
                raise Clp2pError.about(
                    "{" + name + "} {value}: give true or false", value=repr(value)[:40]
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
            **({"self_layers": layers_spec(self.self_layers)} if self.self_layers else {}),
            "v_inject": self.v_window.spec(),
            "v_blend": self.v_blend,
            "v_layers": self.v_layers,
            "k": self.k,
            **({"blend_start": self.blend_start} if self.blend_start else {}),
            **({"blend_pixels": True} if self.blend_pixels else {}),
            **({"blend_norm": True} if self.blend_norm else {}),
            "blend_words": list(self.blend_words),
            "reweight": {w: s for w, s in self.reweight},
            "inject_uncond": self.inject_uncond,
            **({"refine_pad": self.refine_pad} if self.refine_pad != "reference" else {}),
        }

    @classmethod
    def json_keys(cls) -> tuple[str, ...]:
        """Every key :meth:`to_json` can write (some only when set): a session file's
        spelling of the edit's fields."""
        every = cls(self_layers=(1, 1), k=0.3, blend_start=0.1, blend_pixels=True)
        return tuple(every.with_(blend_norm=True, refine_pad="shifted").to_json())

    @classmethod
    def from_json(cls, data: dict) -> EditParams:
        res = data.get("self_res", 16)
        return cls(
            kind=data.get("kind", "auto"),
            preset=data.get("preset", "custom"),
            cross=CrossWindow.parse(str(data.get("cross", "0.2"))),
            self_window=StepWindow.parse(str(data.get("self", "0.8")), "self_window"),
            self_res=None if res == "all" else int(res),
            self_layers=parse_layers(str(data.get("self_layers", "all"))),
            v_window=StepWindow.parse(str(data.get("v_inject", "0")), "v_window"),
            v_blend=float(data.get("v_blend", 0.0)),
            v_layers=data.get("v_layers", "self"),
            k=float(data.get("k", 0.0)),
            blend_start=float(data.get("blend_start", 0.0)),
            blend_pixels=data.get("blend_pixels", False),
            blend_norm=data.get("blend_norm", False),
            blend_words=tuple(data.get("blend_words", ())),
            reweight=tuple((str(w), float(s)) for w, s in dict(data.get("reweight", {})).items()),
            inject_uncond=bool(data.get("inject_uncond", False)),
            refine_pad=str(data.get("refine_pad", "reference")),
        )


def layers_spec(layers: tuple[int, int] | None) -> str:
    return "all" if layers is None else f"{layers[0]}:{layers[1]}"


def parse_layers(text: str) -> tuple[int, int] | None:
    """``all`` or ``A:B`` (self-attention layers A to B, counted from 1)."""
    text = text.strip()
    if text == "all":
        return None
    a, sep, b = text.partition(":")
    try:
        if not sep:
            raise ValueError
        layers = (int(a), int(b))
    except ValueError:
        raise Clp2pError.about(
            "{self_layers} '{text}': write A:B (e.g. 4:14, the layers counted from 1) or 'all'",
            text=text[:40],
        ) from None
    EditParams(self_layers=layers)  # checks the bounds
    return layers


RECORDED = -1  # the source index of a branch edited from a recorded branch (a BranchRecord)


@dataclass(frozen=True)
class Branch:
    """One image of a render: a prompt, and for an edit the branch it is edited from
    (``source``, a lower index) with the edit's parameters. Branch 0 is the root."""

    prompt: str
    source: int | None = None
    edit: EditParams | None = None
