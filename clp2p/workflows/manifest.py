"""Batch manifests: one JSON object per line, each an item of :mod:`clp2p.model.sweep`.

A line names a ``prompt`` (and an ``image``, a picture to import that the prompt describes),
a ``target``, any sampling field and any edit field, spelled as session files spell them; a
``preset`` gives the edit's other fields, the command's sampling flags the other settings.
Every field is checked against the session schema's own definitions before anything loads, so
a line is refused exactly when a session holding it would be."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from clp2p.errors import Clp2pError
from clp2p.model.imported import DEFAULT_INNER_STEPS, DEFAULT_METHOD, FITS, METHODS
from clp2p.model.params import EditParams
from clp2p.model.presets import preset
from clp2p.model.session import Session
from clp2p.model.settings import RenderSettings
from clp2p.model.sweep import MAX_ITEMS, SEED_AXIS, Item, Picture
from clp2p.resources import resources_dir
from clp2p.workflows.session_schema import short

SETTING_FIELDS = ("seed", "steps", "guidance", "width", "height", "negative", "scheduler", "karras")
PARAM_FIELDS = EditParams.json_keys()
PICTURE_FIELDS = ("invert", "fit", "inner_steps")
FIELDS = ("prompt", "image", "target", "name", *SETTING_FIELDS, *PARAM_FIELDS, *PICTURE_FIELDS)
MAX_NESTING = 8  # a line is a flat object; deeper JSON is refused unread


@cache
def _validators():
    """Validators of the session schema's edit parameters and root settings."""
    from jsonschema import Draft202012Validator

    from clp2p.model.session import SCHEMA_VERSION

    path = resources_dir() / "schemas" / f"session-v{SCHEMA_VERSION}.schema.json"
    schema = json.loads(path.read_text(encoding="utf-8"))
    defs = schema["$defs"]
    params = Draft202012Validator({"$defs": defs, "$ref": "#/$defs/params"})
    settings = Draft202012Validator({"$defs": defs, **schema["properties"]["settings"]})
    return params, settings


def _check(validator, document: dict) -> None:
    from jsonschema.exceptions import best_match

    error = best_match(validator.iter_errors(document))
    if error is not None:
        where = ".".join(str(p) for p in error.absolute_path) or "the line"
        raise Clp2pError(f"'{where}': {short(error.message, 100)}")


def _text(data: dict, name: str, default: str | None = None) -> str:
    value = data.get(name, default)
    if not isinstance(value, str):
        raise Clp2pError(f"'{name}' must be text")
    return value


def item(line: int, data: object, defaults: RenderSettings, model: str, adapters=(), xl=False):
    """The item of one manifest line (parsed JSON); a one-line error naming the line."""
    where = f"manifest line {line}"
    if not isinstance(data, dict):
        raise Clp2pError(
            f'{where}: write one JSON object per line, e.g. {{"prompt": ..., "target": ...}}'
        )
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise Clp2pError(
            f"{where}: unknown field '{unknown[0][:40]}': fields are {', '.join(FIELDS)}"
        )
    try:
        return _item(data, defaults, model, adapters, xl)
    except Clp2pError as exc:
        raise Clp2pError(f"{where}: {exc.render()}") from None


def _item(data: dict, defaults: RenderSettings, model: str, adapters: tuple, xl: bool) -> Item:
    params_check, settings_check = _validators()
    prompt, target = _text(data, "prompt"), _text(data, "target", "")
    settings = defaults.to_json() | {k: data[k] for k in SETTING_FIELDS if k in data}
    _check(settings_check, settings)
    edit = preset(_text(data, "preset", EditParams().preset), xl).to_json()
    edit |= {k: data[k] for k in PARAM_FIELDS if k in data}
    _check(params_check, edit)
    params = EditParams.from_json(edit)
    picture = None
    if "image" in data:
        method, fit = _text(data, "invert", DEFAULT_METHOD), _text(data, "fit", FITS[0])
        inner = data.get("inner_steps", DEFAULT_INNER_STEPS)
        if method not in METHODS or fit not in FITS:
            raise Clp2pError(f"invert is one of {', '.join(METHODS)}, fit one of {', '.join(FITS)}")
        if isinstance(inner, bool) or not isinstance(inner, int) or inner < 1:
            raise Clp2pError("inner_steps: give a whole number of at least 1")
        picture = Picture(_text(data, "image"), method, fit, inner)
    elif set(data) & set(PICTURE_FIELDS):
        raise Clp2pError("invert, fit and inner_steps are for an image: give 'image' or drop them")
    session = Session.new(prompt, RenderSettings.from_json(settings), model, adapters)
    session, child = session.add_edit("n1", target, params)
    values = (("name", _text(data, "name", "")), (SEED_AXIS, str(session.settings.seed)))
    return Item(session, child, values, picture)


def _too_deep(line: str) -> bool:
    depth = 0
    for ch in line:
        depth += ch in "[{"
        depth -= ch in "]}"
        if depth > MAX_NESTING:
            return True
    return False


def read(
    path: str | Path, defaults: RenderSettings, model: str, adapters=(), xl=False
) -> list[Item]:
    """The items of a manifest file; blank lines and ``#`` comments are skipped. A picture is
    resolved beside the manifest and read now, so that a bad one stops the batch before a
    model loads."""
    from dataclasses import replace

    from clp2p.model.imported import read_image

    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise Clp2pError(f"manifest '{path}' is not UTF-8 text: save it as UTF-8") from None
    items = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            if _too_deep(line):
                raise ValueError("nested too deep")
            data = json.loads(line)
        except ValueError as exc:
            reason = (
                f"{exc.msg} at column {exc.colno}"
                if isinstance(exc, json.JSONDecodeError)
                else str(exc)
            )
            raise Clp2pError(
                f"manifest line {number}: not a JSON object ({reason}): write one object per line"
            ) from None
        entry = item(number, data, defaults, model, adapters, xl)
        if entry.picture is not None:
            picture = (file.parent / entry.picture.path).expanduser().absolute()
            try:
                read_image(picture)
            except Clp2pError as exc:
                raise Clp2pError(f"manifest line {number}: {exc}") from None
            entry = replace(entry, picture=replace(entry.picture, path=str(picture)))
        items.append(entry)
        if len(items) > MAX_ITEMS:
            raise Clp2pError(f"manifest '{path}' has more than {MAX_ITEMS} items: split it")
    if not items:
        raise Clp2pError(f"manifest '{path}' has no items: write one JSON object per line")
    return items
