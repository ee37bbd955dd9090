"""Importing a picture: invert it with the engine, render its reconstruction, and make it the
root of a new session."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np

from clp2p.engine.fingerprint import weights_of
from clp2p.engine.inversion import invert
from clp2p.model.imported import (
    DEFAULT_INNER_STEPS,
    DEFAULT_METHOD,
    FITS,
    ImportedImage,
    fit_image,
    optimises_embeddings,
    psnr,
)
from clp2p.model.params import Branch
from clp2p.model.session import Session, image_hash, weights_tag


def _imported(result, fitted, reconstruction, fit, file, method, inner_steps) -> ImportedImage:
    """What the session keeps of an inversion ``result`` of the ``fitted`` picture."""
    quality = psnr(reconstruction, fitted)
    return ImportedImage(
        inversion=result.inversion,
        input=image_hash(fitted),
        fit=fit,
        file=file,
        psnr=None if quality == float("inf") else round(quality, 3),
        seconds=round(result.seconds, 3),
        unet_forward=result.unet_forward,
        unet_backward=result.unet_backward,
        inner_steps=inner_steps if optimises_embeddings(method) else 0,
    )


class _Progress:
    """One progress count over the inversion and then the reconstruction's steps."""

    def __init__(self, on_step: Callable[[int, int], None] | None, steps: int) -> None:
        self.on_step, self.steps, self.inverting = on_step, steps, 0

    def inverted(self, done: int, total: int) -> None:
        self.inverting = total
        if self.on_step is not None:
            self.on_step(done, total + self.steps)

    def rendered(self, info) -> None:
        if self.on_step is not None:
            self.on_step(self.inverting + info.step, self.inverting + info.total)


def import_image(
    engine,
    image: np.ndarray,
    prompt: str,
    settings,
    method: str = DEFAULT_METHOD,
    *,
    fit: str = FITS[0],
    file: str = "",
    inner_steps: int = DEFAULT_INNER_STEPS,
    on_step: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
):
    """A new session whose root is ``image`` (any size, fitted to the render size with ``fit``)
    inverted under ``prompt`` and rendered (the reconstruction, with its PSNR against the
    fitted input). Returns ``(session, images)`` (hash -> RGB uint8, the fitted input too)."""
    settings = engine.resolve_settings(settings)
    engine.check_memory(settings.height, settings.width)  # before the picture is resized
    fitted = fit_image(image, settings.width, settings.height, fit)
    progress = _Progress(on_step, settings.steps)
    result = invert(
        engine,
        fitted,
        prompt,
        settings,
        method,
        inner_steps=inner_steps,
        on_step=progress.inverted,
        cancel=cancel,
    )
    render = engine.render(
        [Branch(prompt)],
        settings,
        inversion=result.inversion,
        on_step=progress.rendered,
        cancel=cancel,
    )
    reconstruction = render.images[0]
    imported = _imported(result, fitted, reconstruction, fit, file, method, inner_steps)
    session = replace(Session.from_image(imported, settings, engine.name), adapters=engine.adapters)
    key = image_hash(reconstruction)
    session = session.update(
        "n1",
        status="rendered",
        image=key,
        seconds=round(result.seconds + render.seconds, 3),
        metrics={} if imported.psnr is None else {"psnr": imported.psnr},
        weights=weights_tag(weights_of(engine)),
    )
    return session, {key: reconstruction, imported.input: fitted}
