"""Imported pictures, without torch: reading and fitting an image file, and
:class:`Inversion`, the stored result of inverting one (see :mod:`clp2p.inversion`)."""

from __future__ import annotations

import hashlib
import io
import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from clp2p.errors import Clp2pError
from clp2p.model import limits

METHODS = ("null-text", "negative-prompt", "direct")
# the default: exact source, one sampling pass, and the best edits on the shapes world
# (docs/inversion.md)
DEFAULT_METHOD = "direct"
DEFAULT_INNER_STEPS = 10  # null-text: optimisation steps per denoising step (Mokady et al.)
FITS = ("crop", "fit")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


def optimises_embeddings(method: str) -> bool:
    """Whether ``method`` optimises the unconditional embeddings per step (null-text): it
    alone takes inner optimisation steps, needs guidance above 1, and holds for one guidance."""
    return method == "null-text"


@dataclass(frozen=True)
class Inversion:
    """What renders need from an inversion of ``prompt``'s image.

    ``latents``: (steps + 1, C, h, w) float32, the DDIM inversion trajectory in sampling order
    (``latents[0]`` is where sampling starts, ``latents[-1]`` the image's own latent).
    ``uncond``: null-text's optimised unconditional embeddings, (steps, T, D) float32, valid
    only at the guidance scale ``guidance`` they were optimised for."""

    method: str
    prompt: str
    latents: np.ndarray = field(compare=False, repr=False)
    uncond: np.ndarray | None = field(default=None, compare=False, repr=False)
    guidance: float = 0.0  # null-text: the guidance scale of the optimisation
    data_hash: str = field(init=False)  # equal inversions have equal hashes

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise Clp2pError.about(
                "{method} '{value}': choose one of {methods}",
                value=self.method,
                methods=", ".join(METHODS),
            )
        latents, uncond = np.asarray(self.latents), self.uncond
        if latents.ndim != 4 or len(latents) < 2:
            raise Clp2pError("the inversion trajectory is not (steps + 1, C, h, w)")
        if (uncond is not None) != (self.method == "null-text"):
            raise Clp2pError("null-text inversions, and only they, carry embeddings")
        if uncond is not None and (uncond.ndim != 3 or len(uncond) != len(latents) - 1):
            raise Clp2pError("the inversion's embeddings are not (steps, tokens, width)")
        object.__setattr__(self, "data_hash", self.digest())

    @property
    def steps(self) -> int:
        return len(self.latents) - 1

    def digest(self) -> str:
        """Content hash of the method, prompt and arrays."""
        h = hashlib.sha256(f"{self.method}\n{self.prompt}\n{self.guidance!r}\n".encode())
        for a in (self.latents, self.uncond):
            if a is not None:
                h.update(f"{a.shape}:".encode())
                h.update(np.ascontiguousarray(a, dtype=np.float32).tobytes())
        return h.hexdigest()

    def to_bytes(self) -> bytes:
        arrays = {
            "latents": self.latents.astype(np.float32),
            "guidance": np.array(self.guidance, np.float64),
        }
        if self.uncond is not None:
            arrays["uncond"] = self.uncond.astype(np.float32)
        buf = io.BytesIO()
        np.savez_compressed(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, method: str, prompt: str, raw: bytes) -> Inversion:
        with np.load(io.BytesIO(raw), allow_pickle=False) as data:
            latents = data["latents"]
            uncond = data["uncond"] if "uncond" in data.files else None
            guidance = float(data["guidance"]) if "guidance" in data.files else 0.0
        return cls(method, prompt, latents, uncond, guidance)

    @property
    def fixes_guidance(self) -> bool:
        """Whether renders must keep the guidance of the inversion (null-text's embeddings
        are optimised for one guidance scale)."""
        return optimises_embeddings(self.method)

    def check(self, settings) -> None:
        """Refuse render ``settings`` this inversion was not made for."""
        if self.steps != settings.steps:
            raise Clp2pError(
                f"the picture was inverted with {self.steps} steps, not {settings.steps}: keep "
                "its steps (or import it again with the new ones)"
            )
        if self.fixes_guidance and settings.guidance != self.guidance:
            raise Clp2pError(
                f"null-text inversion optimised for guidance {self.guidance:g}, not "
                f"{settings.guidance:g}: keep it (or import the picture again)"
            )
        if settings.scheduler != "ddim":
            raise Clp2pError.about(
                "{scheduler} {value}: an imported picture is edited along its DDIM inversion; "
                "keep {scheduler} ddim",
                value=settings.sampler,
            )
        if settings.negative and self.method != "direct":
            raise Clp2pError.about(
                "{negative}: {method} {value} inversion defines the unconditional half itself "
                "(null-text optimises it, negative-prompt inversion uses the picture's prompt); "
                "clear the negative prompt, or import with {method} direct",
                value=self.method,
            )


# The largest picture clp2p imports: the largest it renders. Its header is checked before a
# pixel is decoded, so a small file that claims gigapixels costs nothing.
MAX_PICTURE_SIDE = limits.MAX_SIZE
MAX_PICTURE_PIXELS = MAX_PICTURE_SIDE * MAX_PICTURE_SIDE
PICTURE_FORMATS = ("PNG", "JPEG", "WEBP")


def read_image(path: str | Path) -> np.ndarray:
    """An RGB uint8 (H, W, 3) picture from a PNG, JPEG or WebP file. Only a regular file is
    opened (a FIFO or a device is refused without waiting on it), and it is decoded only
    after its header shows at most :data:`MAX_PICTURE_PIXELS` pixels. Every refusal is one
    line that names the file and what to change."""
    from PIL import Image

    path = Path(path)
    try:  # non-blocking: opening a FIFO must not wait for a writer
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise Clp2pError(
            f"image '{path}' does not exist: give the path of a PNG, JPEG or WebP"
        ) from None
    except OSError as exc:
        raise Clp2pError(
            f"cannot open image '{path}' ({exc.strerror}): give a file you can read"
        ) from None
    kind = os.fstat(fd).st_mode
    if not stat.S_ISREG(kind):
        os.close(fd)
        what = "a folder" if stat.S_ISDIR(kind) else "not a regular file"
        raise Clp2pError(f"image '{path}' is {what}: give a PNG, JPEG or WebP file")
    # PIL's own bomb checks are errors too
    with os.fdopen(fd, "rb") as file, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(file) as im:
                _check_header(path, im.format, im.size)
                return _rgb(im)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise _too_large(path, "") from None
        except Clp2pError:
            raise
        except Exception as exc:  # PIL on a hostile file: OSError, SyntaxError, struct...
            raise Clp2pError(
                f"cannot read image '{path}' ({type(exc).__name__}): the file is damaged "
                "or not an image; give a PNG, JPEG or WebP"
            ) from None


def _check_header(path: Path, format: str | None, size: tuple[int, int]) -> None:
    if format not in PICTURE_FORMATS:
        raise Clp2pError(
            f"image '{path}' is {format or 'of an unknown format'}: convert it to PNG, JPEG or WebP"
        )
    width, height = size
    if width * height > MAX_PICTURE_PIXELS:
        raise _too_large(path, f" ({width}x{height})")
    if min(width, height) < limits.MIN_SIZE:
        raise Clp2pError(
            f"image '{path}' is {width}x{height}: give a picture at least "
            f"{limits.MIN_SIZE} pixels on each side"
        )


def _too_large(path: Path, size: str) -> Clp2pError:
    return Clp2pError(
        f"image '{path}' is too large{size}: clp2p imports pictures of up to "
        f"{MAX_PICTURE_PIXELS:,} pixels ({MAX_PICTURE_SIDE}x{MAX_PICTURE_SIDE}); scale it down"
    )


def _rgb(im) -> np.ndarray:
    """The decoded picture as RGB uint8: 16-bit grey scaled to 8 bits (PIL would clip it),
    a palette's transparency dropped as an RGBA picture's alpha is."""
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        grey = (np.asarray(im).astype(np.uint32) >> 8).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2))
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    return np.asarray(im.convert("RGB"))


def fit_image(image: np.ndarray, width: int, height: int, fit: str = "crop") -> np.ndarray:
    """Resize ``image`` to ``width`` x ``height``: ``crop`` fills the frame and cuts the
    overflow (centred); ``fit`` shows the whole image and pads the rest with the median colour
    of its border."""
    from PIL import Image

    if fit not in FITS:
        raise Clp2pError.about(
            "{fit} '{value}': choose crop (fill the frame) or fit (whole image)", value=fit
        )
    h, w = image.shape[:2]
    scale = (max if fit == "crop" else min)(width / w, height / h)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    resized = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))
    if fit == "crop":
        x0, y0 = (size[0] - width) // 2, (size[1] - height) // 2
        return np.ascontiguousarray(resized[y0 : y0 + height, x0 : x0 + width])
    border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
    out = np.empty((height, width, 3), np.uint8)
    out[:] = np.median(border, axis=0).round().astype(np.uint8)
    x0, y0 = (width - size[0]) // 2, (height - size[1]) // 2
    out[y0 : y0 + size[1], x0 : x0 + size[0]] = resized
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio (dB) of two uint8 images; inf when equal."""
    from skimage.metrics import peak_signal_noise_ratio

    if np.array_equal(a, b):
        return float("inf")
    return float(peak_signal_noise_ratio(a, b, data_range=255))


@dataclass(frozen=True)
class ImportedImage:
    """A session root made from a picture: its inversion, the input as fitted to the model
    (an image hash), how it was fitted and the source file's name, and what inverting cost
    and gave (reconstruction PSNR against the input, in dB)."""

    inversion: Inversion
    input: str
    fit: str = "crop"
    file: str = ""
    psnr: float | None = None
    seconds: float = 0.0
    unet_forward: int = 0
    unet_backward: int = 0
    inner_steps: int = 0
