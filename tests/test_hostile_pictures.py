"""Hostile pictures to import, one test each: refused in one line that names the file, by
their header before a pixel is decoded and before a model loads; uncommon but valid kinds
import as RGB."""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

from clp2p.cli.main import main
from clp2p.errors import Clp2pError

PROMPT = "a red circle on a white background"


# ---- pictures to import: refused in one line, by their header, before a model loads ------
def _chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def _png(width: int, height: int, depth: int = 1, colour: int = 0, extra: bytes = b"") -> bytes:
    """A valid PNG of zeros, made row by row: small on disk however large it claims to be."""
    row, z = b"\0" * (1 + (width * depth + 7) // 8), zlib.compressobj(9)
    data = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + extra
        + _chunk(b"IDAT", data)
        + (_chunk(b"IEND", b""))
    )


def _jpeg_claiming(width: int, height: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (10, 200, 10)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def _encoded(fmt: str, image: Image.Image, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


PICTURES = {  # name -> (the file's bytes, or how to make it at a path; words of the refusal)
    "bomb-20000x20000-1-bit": (lambda: _png(20000, 20000), "too large"),
    "bomb-10000x10000-palette": (
        lambda: _png(10000, 10000, 1, 3, _chunk(b"PLTE", b"\0\0\0\xff\xff\xff")),
        "too large",
    ),
    "over-the-cap-9000x9000": (lambda: _png(9000, 9000), "too large (9000x9000)"),
    "jpeg-claiming-65500x65500": (lambda: _jpeg_claiming(65500, 65500), "too large"),
    "jpeg-claiming-9000x8000": (lambda: _jpeg_claiming(9000, 8000), "too large (9000x8000)"),
    "one-pixel-tall": (lambda: _png(100_000, 1), "at least 8 pixels"),
    "zero-width": (lambda: _png(0, 16), "damaged"),
    "4x4": (lambda: _png(4, 4), "at least 8 pixels"),
    "truncated": (lambda: _encoded("PNG", Image.new("RGB", (64, 64), (1, 2, 3)))[:60], "damaged"),
    "pixels-not-deflate": (lambda: _png(64, 64).replace(b"IDAT", b"IDAT\xff\xfe", 1), "damaged"),
    "empty-file": (lambda: b"", "damaged"),
    "text-named-png": (lambda: b"just some notes\n" * 10, "damaged"),
    "gif": (lambda: _encoded("GIF", Image.new("RGB", (16, 16))), "is GIF: convert it"),
    "ztxt-bomb": (
        lambda: _png(64, 64, extra=_chunk(b"zTXt", b"c\0\0" + zlib.compress(b"x" * 2**25))),
        "damaged",
    ),
    "missing": (None, "does not exist"),
    "a-folder": ("mkdir", "is a folder"),
    "a-fifo": ("mkfifo", "is not a regular file"),
    "a-link-to-dev-zero": ("/dev/zero", "is not a regular file"),
}


def _picture(tmp_path, name: str) -> str:
    make = PICTURES[name][0]
    path = tmp_path / f"{name}.png"
    if make == "mkdir":
        path.mkdir()
    elif make == "mkfifo":
        os.mkfifo(path)
    elif make == "/dev/zero":
        path.symlink_to("/dev/zero")
    elif make is not None:
        path.write_bytes(make())
    return str(path)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", PICTURES)
def test_a_hostile_picture_is_one_line_before_the_model_loads(tmp_path, capsys, name, monkeypatch):
    from clp2p.engine.engine import Engine
    from clp2p.model.imported import read_image

    picture = _picture(tmp_path, name)
    with pytest.raises(Clp2pError) as refused:
        read_image(picture)
    assert PICTURES[name][1] in str(refused.value) and picture in str(refused.value)
    monkeypatch.setattr(Engine, "load", classmethod(lambda *a, **k: pytest.fail("loaded")))
    out = tmp_path / "out" / "s.json"
    assert main(["invert", picture, "--prompt", PROMPT, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("clp2p: error: ") and err.count("\n") == 1, err
    assert f"image '{picture}'" in err and PICTURES[name][1] in err
    assert not (tmp_path / "out").exists()


def test_the_picture_limit_is_the_largest_render_and_the_message_says_it(tmp_path):
    from clp2p.model import limits
    from clp2p.model.imported import MAX_PICTURE_PIXELS, read_image

    assert MAX_PICTURE_PIXELS == limits.MAX_SIZE**2
    path = tmp_path / "big.png"
    path.write_bytes(_png(limits.MAX_SIZE + 8, limits.MAX_SIZE))
    with pytest.raises(Clp2pError, match=f"up to {MAX_PICTURE_PIXELS:,} pixels"):
        read_image(path)
    path.write_bytes(_png(limits.MAX_SIZE * 4, 64))  # long and thin, within the cap
    assert read_image(path).shape == (64, limits.MAX_SIZE * 4, 3)


def _grey16() -> Image.Image:
    ramp = (np.arange(64 * 64, dtype=np.uint32).reshape(64, 64) * 16).astype(np.uint16)
    return Image.fromarray(ramp)


def _palette_alpha() -> Image.Image:
    image = Image.new("P", (32, 32))
    image.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    image.paste(1, (0, 0, 16, 32))
    return image


READABLE = {  # pictures of uncommon kinds import as RGB
    "16-bit-grey-png": ("PNG", _grey16, {}),
    "cmyk-jpeg": ("JPEG", lambda: Image.new("CMYK", (32, 32), (0, 255, 255, 0)), {}),
    "palette-with-transparency": ("PNG", _palette_alpha, {"transparency": 0}),
    "grey-with-alpha": ("PNG", lambda: Image.new("LA", (32, 32), (128, 10)), {}),
    "rgba-webp": ("WEBP", lambda: Image.new("RGBA", (32, 32), (0, 0, 255, 0)), {}),
    "1-bit-png": ("PNG", lambda: Image.new("1", (32, 32), 1), {}),
}


@pytest.mark.parametrize("name", READABLE)
def test_an_uncommon_picture_imports_as_rgb(tmp_path, name):
    from clp2p.model.imported import read_image

    fmt, make, options = READABLE[name]
    path = tmp_path / f"p.{fmt.lower()}"
    path.write_bytes(_encoded(fmt, make(), **options))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning reaches the user's terminal either
        image = read_image(path)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    if name == "16-bit-grey-png":  # scaled to 8 bits, not clipped to white
        assert image[0, 0, 0] == 0 and image[-1, -1, 0] == 255 and 100 < image.mean() < 160
    if name == "palette-with-transparency":
        assert tuple(image[0, 0]) == (0, 0, 255) and tuple(image[0, -1]) == (255, 0, 0)


@pytest.mark.parametrize("name", ["bomb-20000x20000-1-bit", "jpeg-claiming-65500x65500"])
def test_the_studios_picture_reader_refuses_bombs_in_one_line(tmp_path, name):
    from clp2p.model.imported import read_image

    with pytest.raises(Clp2pError):
        read_image(_picture(tmp_path, name))
