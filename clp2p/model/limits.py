"""The bounds every input must keep, in one place: the model's types enforce them, the
session schema (``resources/schemas/session-v8.schema.json``) states the same numbers (a test
holds them equal), and the CLI and the studio take their ranges from here. A value outside
them is refused where it is typed, so a file clp2p writes always loads again."""

from __future__ import annotations

import math

from clp2p.errors import Clp2pError

MAX_STEPS = 1000  # denoising steps (the schedulers' training schedules have 1000)
MAX_GUIDANCE = 100.0  # classifier-free guidance scale
MIN_SIZE, MAX_SIZE = 8, 8192  # image width and height in pixels
MAX_SEED = 2**63 - 1
MAX_PROMPT_CHARS = 4096
MAX_NAME_CHARS = 1024
MAX_NOTE_CHARS = 100_000
MAX_SELF_RES = 4096  # side of the largest self-attention grid an edit may name
MAX_LAYER = 1024  # the highest self-attention layer number an edit may name
MAX_REWEIGHT = 1000.0  # |scale| of a re-weighted word
MAX_WORD_CHARS = 256  # a blend or re-weight word
MAX_PATH = 4096  # a file path a session names (LoRA and embedding files)
NODE_ID_PATTERN = r"^n[0-9]{1,9}$"
# the weights a node's picture was rendered with: the head of their sha256 fingerprint
WEIGHTS_CHARS = 16
WEIGHTS_PATTERN = rf"^[0-9a-f]{{{WEIGHTS_CHARS}}}$"


def finite(field: str, value: float) -> float:
    """``value`` as a float, refused when it is not a finite number (NaN and infinity are not
    JSON: a session holding them would not load)."""
    number = float(value)
    if not math.isfinite(number):
        raise Clp2pError.about("{" + field + "} {value}: give a finite number", value=value)
    return number


def text(field: str, value: str, limit: int) -> str:
    """``value`` refused when longer than ``limit`` characters, or when it holds characters
    that are not text (lone surrogates: bytes that were not UTF-8), which no file can store."""
    if len(value) > limit:
        raise Clp2pError.about(
            "{" + field + "} is {n} characters long: shorten it to at most {limit}",
            n=len(value),
            limit=limit,
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise Clp2pError.about(
            "{" + field + "} holds bytes that are not UTF-8 text (at character {at}): "
            "type it again as plain text",
            at=exc.start,
        ) from None
    return value


def memory(what: str, need: int, available: int, device: str) -> None:
    """Refuse ``what`` (e.g. ``512x8192``) when the estimated peak ``need`` in bytes exceeds
    the ``available`` bytes of ``device``: before a render allocates, not after the system
    starts swapping or kills the process."""
    if need > available:
        raise Clp2pError(
            f"{what} needs about {_gib(need)} on {device}, {_gib(available)} is available: "
            "choose a smaller size"
        )


def _gib(n: int) -> str:
    gib = n / 2**30
    return f"{gib:.0f} GiB" if gib >= 10 else f"{gib:.1f} GiB"


def whole_field(obj: object, name: str) -> None:
    """Store ``obj.name`` as an int: a whole number written as a float (``4.0``) is one; any
    other non-integer is refused."""
    value = getattr(obj, name)
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return
    if isinstance(value, float) and value.is_integer():
        object.__setattr__(obj, name, int(value))
        return
    raise Clp2pError.about("{" + name + "} {value!r}: give a whole number", value=value)
