"""Local blend's pixels (``EditParams.blend_pixels``): an edit's decoded picture keeps its
source's pixels outside the blend mask, where prompt-to-prompt keeps only the source's latents.
On the shapes model a colour swap with latent blending alone moves the other object and the
background (the VAE's decoder normalises over the whole latent); with pixels they stay. The
switch itself (file, CLI, studio, record cache) is tested with ``blend_norm`` in
``test_blend_switches``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from clp2p.attention.blend import lay_over

SHAPES = Path(__file__).resolve().parents[1] / "resources" / "models" / "shapes"
SRC = "a red circle on a white background"
TGT = "a blue circle on a white background"
TWO = "a red circle and a orange square on a gray background"


def test_lay_over_keeps_the_source_exactly_outside_the_softened_mask():
    source = np.full((16, 16, 3), 10, np.uint8)
    edit = np.full((16, 16, 3), 250, np.uint8)
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, 1:3, 1:3] = True  # pixels 4..11 at 4 pixels a cell
    out = lay_over(source, edit, mask, 4)
    assert (out[6:10, 6:10] == 250).all()  # the inside, away from the softened edge
    inside = np.zeros((16, 16), bool)
    inside[2:14, 2:14] = True  # the mask grown by the softening (half a cell)
    assert (out[~inside] == 10).all()
    edge = out[2:14, 2:14, 0]
    assert ((edge >= 10) & (edge <= 250)).all() and len(np.unique(edge)) > 2
