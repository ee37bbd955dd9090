"""LoRA weights and textual-inversion embeddings a model is loaded with: each is a local
file, named in sessions by its path and its content hash, so a session re-renders with the
very weights it was made with, or says which file is missing or changed."""

from __future__ import annotations

import re
from dataclasses import dataclass

from clp2p.errors import Clp2pError
from clp2p.model import limits

ADAPTER_KINDS = ("lora", "embedding")
MAX_LORA_SCALE = 10.0  # |strength| of a LoRA
MAX_ADAPTERS = 32  # files a model may be loaded with
ADAPTER_SUFFIXES = (".safetensors", ".pt", ".bin")  # .pt / .bin load without running code
TOKEN_PATTERN = r"^[^\s:]{1,64}$"  # a textual-inversion token: one word, no colon
SHA256_PATTERN = r"^[0-9a-f]{64}$"


@dataclass(frozen=True)
class Adapter:
    """A LoRA (``kind`` ``lora``, applied at ``scale``) or a textual-inversion embedding
    (``embedding``, whose ``token`` prompts use) from the file ``path`` with content hash
    ``sha256``."""

    kind: str
    path: str
    sha256: str
    scale: float = 1.0
    token: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ADAPTER_KINDS:
            raise Clp2pError(f"adapter kind '{self.kind}': use one of {', '.join(ADAPTER_KINDS)}")
        limits.text("lora" if self.kind == "lora" else "embedding", self.path, limits.MAX_PATH)
        if not re.match(SHA256_PATTERN, self.sha256):
            raise Clp2pError(f"'{self.path}': its content hash is not a sha256 hex digest")
        scale = limits.finite("lora", self.scale)
        if not abs(scale) <= MAX_LORA_SCALE:
            raise Clp2pError.about(
                "{lora} scale {value:g}: give a strength in [-{limit:g}, {limit:g}]",
                value=scale,
                limit=MAX_LORA_SCALE,
            )
        if self.kind == "embedding" and not re.match(TOKEN_PATTERN, self.token):
            raise Clp2pError.about(
                "{embedding} token '{token}': give one word of at most 64 characters, "
                "without spaces or ':'",
                token=self.token[:70],
            )

    def spec(self) -> str:
        """``FILE:SCALE`` or ``FILE:TOKEN``, as the CLI takes it."""
        return f"{self.path}:{self.scale:g}" if self.kind == "lora" else f"{self.path}:{self.token}"

    def to_json(self) -> dict:
        data: dict = {"kind": self.kind, "path": self.path, "sha256": self.sha256}
        if self.kind == "lora":
            data["scale"] = self.scale
        else:
            data["token"] = self.token
        return data

    @classmethod
    def from_json(cls, data: dict) -> Adapter:
        return cls(
            data["kind"],
            data["path"],
            data["sha256"],
            float(data.get("scale", 1.0)),
            str(data.get("token", "")),
        )


def split_spec(spec: str, kind: str) -> tuple[str, str]:
    """``FILE[:SUFFIX]`` -> (file, suffix or ""): the suffix is what follows the last ':'
    when the text before it names an adapter file (so paths holding ':' still work)."""
    head, sep, tail = spec.rpartition(":")
    if sep and head.lower().endswith(ADAPTER_SUFFIXES):
        return head, tail
    if not spec.lower().endswith(ADAPTER_SUFFIXES):
        raise Clp2pError.about(
            "{"
            + kind
            + "} '{spec}': give a {suffixes} file, optionally with "
            + (":SCALE (e.g. style.safetensors:0.8)" if kind == "lora" else ":TOKEN"),
            spec=spec[:200],
            suffixes="/".join(ADAPTER_SUFFIXES),
        )
    return spec, ""


def lora_scale(text: str) -> float:
    if not text:
        return 1.0
    try:
        return float(text)
    except ValueError:
        raise Clp2pError.about(
            "{lora} scale '{text}': give a number, e.g. style.safetensors:0.8", text=text[:40]
        ) from None
