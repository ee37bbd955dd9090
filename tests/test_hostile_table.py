"""Hostile session files, one test each: a saved session damaged in one place. Loading it
either works or is refused with one line (a Clp2pError), `clp2p session show` answers 0 or 2
with one `clp2p: error:` line, the file is left as it was, nothing outside its folder is read,
and a session that loads saves and loads again."""

from __future__ import annotations

import base64
import io
import json
import os
import random
import re
import threading
import time
from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from clp2p.cli.main import main
from clp2p.errors import Clp2pError
from clp2p.model.imported import ImportedImage, Inversion
from clp2p.model.presets import preset
from clp2p.model.session import SCHEMA_VERSION, Session, image_hash
from clp2p.model.settings import RenderSettings
from clp2p.workflows import session_io

PROMPT = "a red circle on a white background"
TARGET = "a blue circle on a white background"
LOAD, REFUSE, EITHER = "load", "refuse", "either"
RAW = "@@raw@@"  # a value written into the JSON text as it is (NaN, Infinity, 1e400)
IMAGE = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
KEY = image_hash(IMAGE)


def _session() -> Session:
    """Root (rendered, with a metric), a swap with re-weights and blend words, and a cycle
    back to the root."""
    session = Session.new(PROMPT, RenderSettings(steps=4, width=64, height=64), "shapes")
    params = preset("cl-p2p").with_(reweight=(("blue", 2.0),), blend_words=("circle",))
    session, _ = session.add_edit("n1", TARGET, params)
    session, _ = session.add_cycle("n2", None, None)
    return session.update("n1", status="rendered", image=KEY, metrics={"mae": 0.5})


def _imported() -> Session:
    latents = np.random.default_rng(1).standard_normal((5, 4, 16, 16)).astype(np.float32)
    inversion = Inversion("direct", PROMPT, latents)
    imported = ImportedImage(inversion=inversion, input=KEY, fit="crop", file="p.png")
    session = Session.from_image(imported, RenderSettings(steps=4, width=64, height=64), "shapes")
    return session.update("n1", status="rendered", image=KEY)


# ---- mutations ----------------------------------------------------------------------------
def _walk(doc, path: str):
    *parents, last = path.split(".")
    for part in parents:
        doc = doc[int(part)] if isinstance(doc, list) else doc[part]
    return doc, int(last) if isinstance(doc, list) else last


def put(path: str, value) -> Callable[[dict], None]:
    def mutate(doc: dict) -> None:
        where, last = _walk(doc, path)
        where[last] = value

    return mutate


def drop(path: str) -> Callable[[dict], None]:
    def mutate(doc: dict) -> None:
        where, last = _walk(doc, path)
        del where[last]

    return mutate


def raw(path: str, literal: str) -> Callable[[dict], None]:
    return put(path, RAW + literal)


def both(*mutations: Callable[[dict], None]) -> Callable[[dict], None]:
    def mutate(doc: dict) -> None:
        for m in mutations:
            m(doc)

    return mutate


def _png_url(image: np.ndarray) -> str:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


S, P, N = "settings", "nodes.1.params", "nodes.1"
REF = f"images.{KEY}"
HASH = "0" * 64
CASES = {
    # top level
    "format-missing": (drop("format"), REFUSE),
    "format-other": (put("format", "clp2p-edit"), REFUSE),
    "version-missing": (drop("schema_version"), REFUSE),
    "version-newer": (put("schema_version", SCHEMA_VERSION + 1), REFUSE),
    "version-huge": (put("schema_version", 10**100), REFUSE),
    "version-zero": (put("schema_version", 0), REFUSE),
    "version-negative": (put("schema_version", -1), REFUSE),
    "version-string": (put("schema_version", str(SCHEMA_VERSION)), REFUSE),
    "version-float": (put("schema_version", float(SCHEMA_VERSION)), REFUSE),
    "version-bool": (put("schema_version", True), REFUSE),
    "version-1-migrates": (put("schema_version", 1), LOAD),
    "version-3-migrates": (put("schema_version", 3), LOAD),
    "version-6-migrates": (put("schema_version", 6), LOAD),
    "model-missing": (drop("model"), REFUSE),
    "model-empty": (put("model", ""), REFUSE),
    "model-number": (put("model", 5), REFUSE),
    "model-huge": (put("model", "m" * 5000), REFUSE),
    "created-huge": (put("created", "c" * 100_000), REFUSE),
    "device-object": (put("device", {}), REFUSE),
    "unknown-key": (put("extra", 1), REFUSE),
    "settings-missing": (drop("settings"), REFUSE),
    "settings-list": (put("settings", []), REFUSE),
    "nodes-missing": (drop("nodes"), REFUSE),
    "nodes-empty": (put("nodes", []), REFUSE),
    "nodes-object": (put("nodes", {}), REFUSE),
    "nodes-numbers": (put("nodes", [1, 2]), REFUSE),
    "issued-missing": (drop("issued"), REFUSE),
    "issued-zero": (put("issued", 0), REFUSE),
    "issued-string": (put("issued", "3"), REFUSE),
    "issued-below-the-nodes": (put("issued", 1), LOAD),
    "images-list": (put("images", []), REFUSE),
    # settings
    "seed-negative": (put(f"{S}.seed", -1), REFUSE),
    "seed-2**63": (put(f"{S}.seed", 2**63), REFUSE),
    "seed-float": (put(f"{S}.seed", 2.5), REFUSE),
    "seed-string": (put(f"{S}.seed", "7"), REFUSE),
    "seed-bool": (put(f"{S}.seed", True), REFUSE),
    "seed-NaN": (raw(f"{S}.seed", "NaN"), REFUSE),
    "seed-Infinity": (raw(f"{S}.seed", "Infinity"), REFUSE),
    "seed-1e400": (raw(f"{S}.seed", "1e400"), REFUSE),
    "steps-zero": (put(f"{S}.steps", 0), REFUSE),
    "steps-1001": (put(f"{S}.steps", 1001), REFUSE),
    "steps-float": (put(f"{S}.steps", 2.5), REFUSE),
    "steps-null": (put(f"{S}.steps", None), REFUSE),
    "steps--Infinity": (raw(f"{S}.steps", "-Infinity"), REFUSE),
    "guidance-negative": (put(f"{S}.guidance", -0.5), REFUSE),
    "guidance-101": (put(f"{S}.guidance", 101), REFUSE),
    "guidance-string": (put(f"{S}.guidance", "7.5"), REFUSE),
    "guidance-NaN": (raw(f"{S}.guidance", "NaN"), REFUSE),
    "guidance-1e400": (raw(f"{S}.guidance", "1e400"), REFUSE),
    "width-7": (put(f"{S}.width", 7), REFUSE),
    "width-8193": (put(f"{S}.width", 8193), REFUSE),
    "width-negative": (put(f"{S}.width", -64), REFUSE),
    "width-float": (put(f"{S}.width", 64.5), REFUSE),
    "height-huge": (put(f"{S}.height", 10**20), REFUSE),
    "height-bool": (put(f"{S}.height", False), REFUSE),
    "settings-unknown-key": (put(f"{S}.eta", 0.5), REFUSE),
    "settings-seed-missing": (drop(f"{S}.seed"), REFUSE),
    # nodes
    "id-uppercase": (put(f"{N}.id", "N2"), REFUSE),
    "id-suffix": (put(f"{N}.id", "n2x"), REFUSE),
    "id-ten-digits": (put(f"{N}.id", "n1234567890"), REFUSE),
    "id-empty": (put(f"{N}.id", ""), REFUSE),
    "id-number": (put(f"{N}.id", 2), REFUSE),
    "id-duplicate": (put(f"{N}.id", "n1"), REFUSE),
    "parent-forward": (put(f"{N}.parent", "n3"), REFUSE),
    "parent-nowhere": (put(f"{N}.parent", "n9"), REFUSE),
    "parent-itself": (put(f"{N}.parent", "n2"), REFUSE),
    "parent-path": (put(f"{N}.parent", "../n1"), REFUSE),
    "two-roots": (both(put(f"{N}.parent", None), put(f"{N}.kind", "root")), REFUSE),
    "root-with-parent": (put("nodes.0.parent", "n2"), REFUSE),
    "root-with-params": (put("nodes.0.params", {"kind": "swap"}), REFUSE),
    "edit-without-params": (put(f"{N}.params", None), REFUSE),
    "cycle-reverses-itself": (put("nodes.2.reverses", "n3"), REFUSE),
    "cycle-reverses-nowhere": (put("nodes.2.reverses", "n7"), REFUSE),
    "cycle-without-reverses": (put("nodes.2.reverses", None), REFUSE),
    "swap-with-reverses": (put(f"{N}.reverses", "n1"), REFUSE),
    "kind-unknown": (put(f"{N}.kind", "crop"), REFUSE),
    "prompt-empty": (put(f"{N}.prompt", ""), REFUSE),
    "prompt-huge": (put(f"{N}.prompt", "red " * 2000), REFUSE),
    "prompt-number": (put(f"{N}.prompt", 7), REFUSE),
    "prompt-nul-and-controls": (put(f"{N}.prompt", "a\x00blue\x1b[2J\x07circle"), LOAD),
    "name-huge": (put(f"{N}.name", "n" * 2000), REFUSE),
    "note-huge": (put(f"{N}.note", "x" * 100_001), REFUSE),
    "favourite-string": (put(f"{N}.favourite", "yes"), REFUSE),
    "status-unknown": (put(f"{N}.status", "done"), REFUSE),
    "image-not-a-hash": (put(f"{N}.image", "abc"), REFUSE),
    "image-uppercase-hash": (put("nodes.0.image", KEY.upper()), REFUSE),
    "seconds-negative": (put(f"{N}.seconds", -1), REFUSE),
    "seconds-NaN": (raw(f"{N}.seconds", "NaN"), REFUSE),
    "seconds-1e400": (raw(f"{N}.seconds", "1e400"), REFUSE),
    "metrics-string": (put("nodes.0.metrics", {"mae": "x"}), REFUSE),
    "metrics-list": (put("nodes.0.metrics", [0.5]), REFUSE),
    "metrics-key-line-break": (put("nodes.0.metrics", {"\n": False}), REFUSE),
    "metrics-Infinity": (raw("nodes.0.metrics.mae", "Infinity"), REFUSE),
    "metrics-huge-integer": (put("nodes.0.metrics", {"mae": 10**400}), EITHER),
    "node-unknown-key": (put(f"{N}.colour", "red"), REFUSE),
    # edit parameters
    "params-list": (put(P, []), REFUSE),
    "params-unknown-key": (put(f"{P}.strength", 1), REFUSE),
    "params-kind-unknown": (put(f"{P}.kind", "cycle"), REFUSE),
    "params-kind-missing": (drop(f"{P}.kind"), REFUSE),
    "params-preset-huge": (put(f"{P}.preset", "p" * 100), REFUSE),
    "cross-huge": (put(f"{P}.cross", "0." + "1" * 5000), REFUSE),
    "cross-not-a-window": (put(f"{P}.cross", "abc"), REFUSE),
    "cross-NaN-text": (put(f"{P}.cross", "nan"), REFUSE),
    "cross-no-word": (put(f"{P}.cross", "0.2,=0.5"), REFUSE),
    "cross-word-outside": (put(f"{P}.cross", "0.2,blue=5"), REFUSE),
    "cross-number": (put(f"{P}.cross", 0.2), REFUSE),
    "self-backwards": (put(f"{P}.self", "0.9:0.1"), REFUSE),
    "self-above-one": (put(f"{P}.self", "5"), REFUSE),
    "self-dots": (put(f"{P}.self", "..."), REFUSE),
    "v-inject-two-points": (put(f"{P}.v_inject", "1.2.3"), REFUSE),
    "self-res-zero": (put(f"{P}.self_res", 0), REFUSE),
    "self-res-huge": (put(f"{P}.self_res", 5000), REFUSE),
    "self-res-text": (put(f"{P}.self_res", "16"), REFUSE),
    "self-res-float": (put(f"{P}.self_res", 2.5), REFUSE),
    "v-blend-without-window": (put(f"{P}.v_blend", 0.5), REFUSE),
    "v-blend-two": (put(f"{P}.v_blend", 2), REFUSE),
    "v-blend-NaN": (raw(f"{P}.v_blend", "NaN"), REFUSE),
    "v-layers-unknown": (put(f"{P}.v_layers", "all"), REFUSE),
    "k-negative": (put(f"{P}.k", -0.1), REFUSE),
    "k-1.5": (put(f"{P}.k", 1.5), REFUSE),
    "k-Infinity": (raw(f"{P}.k", "Infinity"), REFUSE),
    "k-string": (put(f"{P}.k", "0.3"), REFUSE),
    "blend-start-one": (put(f"{P}.blend_start", 1), REFUSE),
    "blend-start-negative": (put(f"{P}.blend_start", -0.2), REFUSE),
    "blend-start-NaN": (raw(f"{P}.blend_start", "NaN"), REFUSE),
    "blend-start-string": (put(f"{P}.blend_start", "0.2"), REFUSE),
    "blend-pixels-string": (put(f"{P}.blend_pixels", "true"), REFUSE),
    "blend-pixels-number": (put(f"{P}.blend_pixels", 1), REFUSE),
    "blend-pixels-null": (put(f"{P}.blend_pixels", None), REFUSE),
    "blend-norm-string": (put(f"{P}.blend_norm", "true"), REFUSE),
    "blend-norm-number": (put(f"{P}.blend_norm", 0), REFUSE),
    "blend-norm-null": (put(f"{P}.blend_norm", None), REFUSE),
    "blend-words-numbers": (put(f"{P}.blend_words", [1]), REFUSE),
    "blend-word-huge": (put(f"{P}.blend_words", ["w" * 300]), REFUSE),
    "reweight-NaN": (raw(f"{P}.reweight.blue", "NaN"), REFUSE),
    "reweight-1e9": (put(f"{P}.reweight", {"blue": 1e9}), REFUSE),
    "reweight-string": (put(f"{P}.reweight", {"blue": "2"}), REFUSE),
    "reweight-word-huge": (put(f"{P}.reweight", {"b" * 300: 1}), REFUSE),
    "inject-uncond-string": (put(f"{P}.inject_uncond", "yes"), REFUSE),
    # image references: never read from outside the session's .images folder
    "image-ref-absolute": (put(REF, "{outside}"), LOAD),
    "image-ref-dotdot": (put(REF, f"../elsewhere/{KEY}.png"), LOAD),
    "image-ref-through-images": (put(REF, f"s.images/../elsewhere/{KEY}.png"), LOAD),
    "image-ref-http": (put(REF, f"http://localhost/{KEY}.png"), LOAD),
    "image-ref-file-url": (put(REF, "file://{outside}"), LOAD),
    "image-ref-jpeg-data": (put(REF, "data:image/jpeg;base64,/9j/4AAQSkZJRg=="), LOAD),
    "image-ref-truncated-png": (put(REF, _png_url(IMAGE)[:200]), LOAD),
    "image-ref-bad-base64": (put(REF, "data:image/png;base64,!!!!"), LOAD),
    "image-ref-huge-data": (put(REF, "data:image/png;base64," + "A" * 4_000_000), LOAD),
    "image-ref-other-picture": (put(REF, _png_url(255 - IMAGE)), LOAD),
    "image-ref-empty": (put(REF, ""), LOAD),
    "image-ref-number": (put(REF, 5), REFUSE),
    "image-key-not-a-hash": (put("images.abc", f"s.images/{KEY}.png"), REFUSE),
}
INVERSION = {
    "inversion-list": (put("inversion", []), REFUSE),
    "inversion-method-unknown": (put("inversion.method", "ddpm"), REFUSE),
    "inversion-method-other": (put("inversion.method", "null-text"), REFUSE),
    "inversion-data-absolute": (put("inversion.data", "/etc/passwd"), REFUSE),
    "inversion-data-dotdot": (put("inversion.data", f"s.images/../{HASH}.npz"), REFUSE),
    "inversion-data-missing-file": (put("inversion.data", f"s.images/{HASH}.npz"), REFUSE),
    "inversion-data-not-zip": (put("inversion.data", session_io.NPZ_URL + "AAAA"), REFUSE),
    "inversion-data-bad-base64": (put("inversion.data", session_io.NPZ_URL + "%%"), REFUSE),
    "inversion-hash-mismatch": (put("inversion.data_hash", HASH), REFUSE),
    "inversion-hash-not-hex": (put("inversion.data_hash", "z" * 64), REFUSE),
    "inversion-input-not-a-hash": (put("inversion.input", "x"), REFUSE),
    "inversion-psnr-negative": (put("inversion.psnr", -1), REFUSE),
    "inversion-psnr-NaN": (raw("inversion.psnr", "NaN"), REFUSE),
    "inversion-forward-negative": (put("inversion.unet_forward", -1), REFUSE),
    "inversion-fit-unknown": (put("inversion.fit", "stretch"), REFUSE),
    "inversion-unknown-key": (put("inversion.seed", 1), REFUSE),
    "inversion-other-steps": (put(f"{S}.steps", 5), REFUSE),
    # loads; a render of it refuses ("the picture was inverted at another size")
    "inversion-other-size": (both(put(f"{S}.width", 128), put(f"{S}.height", 128)), LOAD),
}


def _snapshot(root) -> dict[str, int]:
    return {
        str(p.relative_to(root)): p.stat().st_size if p.is_file() else -1
        for p in sorted(root.rglob("*"))
        if not p.is_symlink()
    }


def _write(tmp_path, session: Session, mutate: Callable[[dict], None]):
    """The session saved beside its images, changed by ``mutate``, and a copy of its image
    planted outside its folder (which must never be read)."""
    path = tmp_path / "s.json"
    session_io.save(session, path, {KEY: IMAGE})
    outside = tmp_path / "elsewhere" / f"{KEY}.png"
    outside.parent.mkdir()
    Image.fromarray(IMAGE).save(outside)
    doc = json.loads(path.read_text())
    mutate(doc)
    text = json.dumps(doc).replace("{outside}", str(outside))
    path.write_text(re.sub(f'"{RAW}([^"]*)"', r"\1", text))
    return path


def _check(tmp_path, path, expect: str, capsys) -> None:
    """Loading and `session show` agree, refuse in one line and write nothing; a session
    that loads holds its image only from its own folder, and saves and loads again."""
    before, files = path.read_bytes(), _snapshot(tmp_path)
    try:
        session, images = session_io.load(path)
        outcome = LOAD
    except Clp2pError as exc:
        outcome, message = REFUSE, str(exc)
        assert "\n" not in message and 0 < len(message) < 1000, message
    capsys.readouterr()
    code = main(["session", "show", str(path)])
    err = capsys.readouterr().err
    assert code == (0 if outcome == LOAD else 2)
    assert err == "" if code == 0 else err.startswith("clp2p: error: ") and err.count("\n") == 1
    assert expect in (outcome, EITHER), f"expected the file to {expect}"
    assert path.read_bytes() == before and _snapshot(tmp_path) == files
    if outcome == LOAD:
        ref = (json.loads(path.read_text()).get("images") or {}).get(KEY)
        assert (KEY in images) == (ref == f"s.images/{KEY}.png")  # never the planted copy
        again = tmp_path / "again" / "s.json"
        session_io.save(session, again, images)
        assert session_io.load(again)[0].nodes == session.nodes


# Files that would load but could not be saved again: refused at load.
# which weights rendered a node's picture: a tag, or none
CASES |= {
    "weights-tag": (put(f"{N}.weights", "0123456789abcdef"), LOAD),
    "weights-not-hex": (put(f"{N}.weights", "0123456789abcdeg"), REFUSE),
    "weights-upper": (put(f"{N}.weights", "0123456789ABCDEF"), REFUSE),
    "weights-whole-hash": (put(f"{N}.weights", HASH), REFUSE),
    "weights-empty": (put(f"{N}.weights", ""), REFUSE),
    "weights-number": (put(f"{N}.weights", 12), REFUSE),
    "weights-null": (put(f"{N}.weights", None), REFUSE),
}

CASES |= {
    "metrics-1e400": (raw("nodes.0.metrics.mae", "1e400"), REFUSE),  # infinity, not JSON
    "prompt-lone-surrogate": (put(f"{N}.prompt", "\ud800 blue"), REFUSE),  # not UTF-8 text
}


def _params(table: dict) -> list:
    return [pytest.param(m, e, id=name) for name, (m, e) in table.items()]


@pytest.mark.parametrize(("mutate", "expect"), _params(CASES))
def test_a_damaged_session_loads_or_is_one_line(tmp_path, capsys, mutate, expect):
    _check(tmp_path, _write(tmp_path, _session(), mutate), expect, capsys)


@pytest.mark.parametrize(("mutate", "expect"), _params(INVERSION))
def test_a_damaged_inversion_loads_or_is_one_line(tmp_path, capsys, mutate, expect):
    _check(tmp_path, _write(tmp_path, _imported(), mutate), expect, capsys)


def _text(tmp_path) -> str:
    return _write(tmp_path, _session(), lambda doc: None).read_text()


def _deepest_json() -> int:
    """The deepest nesting json.loads takes at this point of the stack."""
    lo, hi = 1, 100_000
    while lo < hi:
        mid = (lo + hi + 1) // 2
        try:
            json.loads("[" * mid + "]" * mid)
            lo = mid
        except RecursionError:
            hi = mid - 1
    return lo


RNG = random.Random(0)
WHOLE_FILES = {
    "empty": lambda text: b"",
    "binary": lambda text: bytes(range(256)) * 16,
    "utf-16": lambda text: text.encode("utf-16"),
    "utf-8-bom": lambda text: b"\xef\xbb\xbf" + text.encode(),
    "latin-1": lambda text: text.replace("red", "r\xe9d").encode("latin-1"),
    "json-array": lambda text: b"[]",
    "json-null": lambda text: b"null",
    "json-string": lambda text: b'"clp2p-session"',
    "json-number": lambda text: b"3",
    "nested-lists-100000": lambda text: b"[" * 100_000 + b"]" * 100_000,
    "nested-objects-100000": lambda text: b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
    "nested-in-a-node": lambda text: text.replace('"n2"', "[" * 100_000 + "]" * 100_000).encode(),
    **{  # cut before the closing brace, at fixed random points
        f"truncated-at-{part:.3f}": (lambda text, p=part: text.encode()[: int(len(text) * p)])
        for part in sorted(RNG.uniform(0.0, 0.99) for _ in range(8))
    },
}


@pytest.mark.parametrize("damage", WHOLE_FILES.values(), ids=WHOLE_FILES.keys())
def test_a_damaged_file_is_refused_in_one_line(tmp_path, capsys, damage):
    path = tmp_path / "s.json"
    text = _text(tmp_path)
    path.write_bytes(damage(text))
    _check(tmp_path, path, REFUSE, capsys)


@pytest.mark.parametrize("where", ["node", "image-ref"])
def test_nesting_just_below_the_parsers_limit_is_one_line(tmp_path, capsys, where):
    text = _text(tmp_path)
    path = tmp_path / "s.json"
    deepest = _deepest_json()
    for depth in range(deepest - 40, deepest + 1):
        nested = "[" * depth + "]" * depth
        if where == "node":
            damaged = text.replace('"id": "n2"', f'"id": {nested}', 1)
        else:
            damaged = text.replace(f'"s.images/{KEY}.png"', nested, 1)
        path.write_text(damaged)
        _check(tmp_path, path, REFUSE, capsys)


def test_a_folder_named_like_a_session_is_one_line(tmp_path, capsys):
    folder = tmp_path / "s.json"
    folder.mkdir()
    with pytest.raises(Clp2pError, match="cannot read session file"):
        session_io.load(folder)
    assert main(["session", "show", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("clp2p: error: ") and err.count("\n") == 1


def test_a_fifo_named_like_a_session_does_not_hang(tmp_path, capsys):
    fifo = tmp_path / "s.json"
    os.mkfifo(fifo)
    main(["session", "show", str(tmp_path / "none.json")])  # the libraries load, untimed
    capsys.readouterr()

    def writer() -> None:  # ends a hang after 3 s: opens the other end and closes it
        time.sleep(3)
        os.close(os.open(fifo, os.O_WRONLY))

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    start = time.perf_counter()
    code = main(["session", "show", str(fifo)])
    waited = time.perf_counter() - start
    if thread.is_alive():  # be the FIFO's reader, so the writer's open returns
        reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
        thread.join()
        os.close(reader)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("clp2p: error: ") and err.count("\n") == 1
    assert waited < 2, f"session show waited {waited:.1f} s on a FIFO"
