"""Sampling settings: what every branch of a render shares (seed, steps, guidance, size,
negative prompt, sampler)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from clp2p.errors import Clp2pError
from clp2p.model import limits

# The deterministic samplers: DDIM (eta 0; the default, and the only one an imported
# picture's inversion follows), DPM-Solver++ 2M and Euler (both also with Karras sigmas).
SCHEDULERS = ("ddim", "dpm++2m", "euler")


@dataclass(frozen=True)
class RenderSettings:
    """Sampling settings shared by every branch of one render. ``negative``: the negative
    prompt, the unconditional half of guidance for every branch ("": the model's
    unconditional embedding). ``scheduler``: the sampler (see :data:`SCHEDULERS`), with
    Karras sigmas when ``karras``."""

    seed: int = 0
    steps: int = 50
    guidance: float = 7.5
    width: int | None = None  # None: the model's native size
    height: int | None = None
    negative: str = ""
    scheduler: str = "ddim"
    karras: bool = False

    def __post_init__(self) -> None:
        for name in ("seed", "steps", "width", "height"):
            limits.whole_field(self, name)
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
        limits.text("negative", self.negative, limits.MAX_PROMPT_CHARS)
        if self.scheduler not in SCHEDULERS:
            raise Clp2pError.about(
                "{scheduler} '{value}' is unknown: use one of {names}",
                value=str(self.scheduler)[:40],
                names=", ".join(SCHEDULERS),
            )
        if self.karras and self.scheduler == "ddim":
            raise Clp2pError.about(
                "{karras}: DDIM has no Karras sigmas; choose {scheduler} dpm++2m or euler"
            )
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
            **({"negative": self.negative} if self.negative else {}),
            **({"scheduler": self.scheduler} if self.scheduler != "ddim" else {}),
            **({"karras": True} if self.karras else {}),
        }

    @classmethod
    def from_json(cls, s: dict) -> RenderSettings:
        return cls(
            s["seed"],
            s["steps"],
            s["guidance"],
            s["width"],
            s["height"],
            s.get("negative", ""),
            s.get("scheduler", "ddim"),
            s.get("karras", False),
        )

    @property
    def sampler(self) -> str:
        """The scheduler as people read it, e.g. ``dpm++2m karras``."""
        return self.scheduler + (" karras" if self.karras else "")
