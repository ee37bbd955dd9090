"""User-facing errors: each message says what to change.

A message that names an input names it by its field (``k``, ``v_blend``, ``steps``, ...), not
by how one front end spells it: each front end shows the field in its own words, the CLI as
its flag (``--k``), the studio as its label. So the rule and its message have one home, in
the model, whichever front end reports it.
"""

from __future__ import annotations

import string
from collections.abc import Mapping


class Clp2pError(ValueError):
    """Bad input from the user (a prompt, a parameter, a file). The message is one line that
    names the problem and what to change; the CLI prints it and exits non-zero.

    ``Clp2pError(text)`` is a plain message. :meth:`about` builds one whose template names
    fields as ``{field}`` placeholders; user text goes in as keyword values, so it is never
    read as a placeholder."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.template: str | None = None
        self.values: dict[str, object] = {}

    @classmethod
    def about(cls, template: str, /, **values: object) -> Clp2pError:
        """An error whose ``template`` names fields as ``{field}`` and shows ``values``
        (e.g. ``Clp2pError.about("{k} {value:g} is outside [0, 1]", value=3.0)``)."""
        error = cls(template)
        error.template, error.values = template, dict(values)
        error.args = (error.render(),)
        return error

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields the message names, in order."""
        if self.template is None:
            return ()
        names = (name for _, name, _, _ in string.Formatter().parse(self.template) if name)
        return tuple(n for n in dict.fromkeys(names) if n not in self.values)

    def render(self, names: Mapping[str, str] | None = None) -> str:
        """The message with each field shown as ``names[field]`` (default: the field's label
        in :data:`FIELD_LABELS`, else the field itself)."""
        if self.template is None:
            return str(self.args[0]) if self.args else ""
        shown = {f: (names or {}).get(f) or FIELD_LABELS.get(f, f) for f in self.fields}
        return self.template.format(**shown, **self.values)

    def prefixed(self, template: str, /, **values: object) -> Clp2pError:
        """This error inside a context, e.g. ``"{cross} {word}: "`` before a window's error."""
        inner = self.template if self.template is not None else _escape(self.render())
        return Clp2pError.about(template + inner, **values, **self.values)


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


# How the model's fields read in plain words (the studio and the library's own messages).
FIELD_LABELS: dict[str, str] = {
    "kind": "edit kind",
    "cross": "cross-attention",
    "self_window": "self-attention",
    "self_res": "self grids",
    "self_layers": "self layers",
    "refine_pad": "refine padding",
    "v_window": "V injection",
    "v_blend": "V blend",
    "v_layers": "V layers",
    "k": "k",
    "blend_start": "blend start",
    "blend_pixels": "blend pixels",
    "blend_norm": "blend norm",
    "blend_words": "blend words",
    "reweight": "re-weight",
    "preset": "preset",
    "seed": "seed",
    "steps": "steps",
    "guidance": "guidance",
    "width": "width",
    "height": "height",
    "negative": "negative prompt",
    "lora": "LoRA",
    "embedding": "embedding",
    "scheduler": "scheduler",
    "karras": "Karras sigmas",
    "method": "method",
    "fit": "fit",
    "prompt": "prompt",
    "device": "device",
    "dtype": "dtype",
}


class RenderCancelled(RuntimeError):
    """A render was cancelled between denoising steps; nothing it produced is kept."""
