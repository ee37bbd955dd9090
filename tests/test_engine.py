"""Engine behaviour on a tiny random-weight Stable Diffusion (CPU, no network)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clp2p.attention.control import AttentionController
from clp2p.attention.recorder import AttentionRecorder, HeatmapOptions
from clp2p.attention.records import KEEP_ALL, Recording
from clp2p.engine.engine import RenderOptions
from clp2p.errors import Clp2pError, RenderCancelled
from clp2p.model.params import Branch, CrossWindow, EditParams, StepWindow
from clp2p.model.presets import preset
from clp2p.model.settings import RenderSettings

SRC = "a red circle on a white background"
SETTINGS = RenderSettings(seed=3, steps=4, guidance=7.5, width=32, height=32)

WINDOWS = [
    preset("p2p"),
    preset("cl-p2p"),
    preset("cl-p2p").with_(v_window=StepWindow(0.0, 1.0), v_blend=0.7, v_layers="both"),
    EditParams(
        cross=CrossWindow(StepWindow(0.25, 0.75), (("circle", StepWindow(0.0, 1.0)),)),
        self_window=StepWindow(0.5, 1.0),
        self_res=None,
        k=0.6,
        blend_words=("circle",),
        inject_uncond=True,
    ),
]


@pytest.mark.parametrize("params", WINDOWS)
def test_swap_to_same_prompt_reproduces_source_exactly(tiny_engine, params):
    result = tiny_engine.edit(SRC, [(SRC, params.with_(kind="swap"))], SETTINGS)
    assert np.array_equal(result.images[0], result.images[1])


def test_plain_generation_equals_diffusers_pipeline(tiny_engine):
    from tiny import diffusers_image

    ours = tiny_engine.generate(SRC, SETTINGS).images[0]
    theirs = diffusers_image(tiny_engine.pipe, SRC, SETTINGS)
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1


def test_reweight_of_one_and_k_zero_equals_plain_generation(tiny_engine):
    plain = tiny_engine.generate(SRC, SETTINGS).images[0]
    params = preset("cl-p2p").with_(kind="reweight", reweight=(("red", 1.0), ("circle", 1.0)))
    result = tiny_engine.edit(SRC, [(SRC, params)], SETTINGS)
    assert np.array_equal(result.images[1], plain)
    assert np.array_equal(result.images[0], plain)


def test_v_injection_with_beta_zero_equals_no_injection(tiny_engine):
    target = "a blue circle on a white background"
    base = preset("cl-p2p")
    none = tiny_engine.edit(SRC, [(target, base)], SETTINGS).images[1]
    zero = base.with_(v_window=StepWindow(0.0, 1.0), v_blend=0.0, v_layers="both")
    assert np.array_equal(tiny_engine.edit(SRC, [(target, zero)], SETTINGS).images[1], none)
    full = base.with_(v_window=StepWindow(0.0, 1.0), v_blend=1.0, v_layers="both")
    assert not np.array_equal(tiny_engine.edit(SRC, [(target, full)], SETTINGS).images[1], none)


def test_edits_change_the_target_and_keep_the_source(tiny_engine):
    plain = tiny_engine.generate(SRC, SETTINGS).images[0]
    targets = [
        ("a blue circle on a white background", preset("p2p")),
        ("a red big circle on a white background", preset("cl-p2p")),
        (
            SRC,
            preset("cl-p2p").with_(reweight=(("red", -1.0),), cross=CrossWindow(StepWindow(0, 1))),
        ),
    ]
    result = tiny_engine.edit(SRC, targets, SETTINGS)
    assert [b.edit.kind for b in result.branches[1:]] == ["swap", "refine", "reweight"]
    assert np.array_equal(result.images[0], plain)
    for image in result.images[1:]:
        assert not np.array_equal(image, plain)


def _explicit_self_reference(q, k, v, pairs, scale):
    """Prompt-to-prompt's way: materialise probabilities, copy the source's into the target."""
    probs = (q @ k.transpose(-1, -2) * scale).softmax(-1)
    for dst, src in pairs:
        probs[dst] = probs[src]
    return probs @ v


def test_sdpa_self_injection_equals_probability_replacement():
    torch.manual_seed(0)
    rows, heads, pixels, dim = 6, 4, 64, 8  # 3 branches, guided
    q, k, v = (torch.randn(rows, heads, pixels, dim) for _ in range(3))
    params = EditParams(kind="swap", self_window=StepWindow(0, 1), self_res=None)
    plans = [
        _plan(1, 0, params),
        _plan(2, 1, params),  # a chain: branch 2 is edited from branch 1
    ]
    options = HeatmapOptions(max_pixels=64)
    recorder = AttentionRecorder(3, 4, {64: (8, 8)}, (8, 8), options, torch.device("cpu"))
    ctrl = AttentionController(plans, 3, 1, True, recorder, (8, 8))
    ctrl.begin_step(0)

    class Attn:
        scale = dim**-0.5

    expected = _explicit_self_reference(
        q.clone(), k.clone(), v.clone(), [(4, 3), (5, 4)], Attn.scale
    )
    got = ctrl.self_attention("layer", Attn, q.clone(), k.clone(), v.clone(), None)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def _plan(branch, source, params, tokens=4, steps=1):
    from clp2p.attention.plan import EditPlan

    return EditPlan(
        branch=branch,
        source=source,
        params=params,
        mapper=torch.eye(tokens),
        take=torch.ones(tokens),
        scale=torch.ones(tokens),
        cross_alpha=torch.ones(steps, tokens),
        blend_source=[],
        blend_target=[],
    )


def test_processors_restored_after_render_error_and_cancel(tiny_engine):
    unet = tiny_engine.pipe.unet
    before = {name: type(p) for name, p in unet.attn_processors.items()}
    tiny_engine.generate(SRC, SETTINGS)
    assert {n: type(p) for n, p in unet.attn_processors.items()} == before

    calls = []

    def cancel_after_two() -> bool:
        calls.append(1)
        return len(calls) > 2

    with pytest.raises(RenderCancelled):
        tiny_engine.generate(SRC, SETTINGS, cancel=cancel_after_two)
    assert {n: type(p) for n, p in unet.attn_processors.items()} == before

    def explode(info):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        tiny_engine.generate(SRC, SETTINGS, on_step=explode)
    assert {n: type(p) for n, p in unet.attn_processors.items()} == before


def test_progress_and_previews(tiny_engine):
    seen = []
    tiny_engine.generate(SRC, SETTINGS, on_step=seen.append, options=RenderOptions(preview_every=2))
    assert [s.step for s in seen] == [1, 2, 3, 4]
    assert seen[0].preview is None and seen[1].preview.shape == (1, 32, 32, 3)


def test_local_blend_keeps_source_outside_the_mask(tiny_engine):
    target = "a blue circle on a white background"
    params = preset("p2p").with_(k=1.0)  # a threshold no normalised map exceeds: empty mask
    result = tiny_engine.edit(SRC, [(target, params)], SETTINGS)
    assert np.array_equal(result.latents[0], result.latents[1])


def test_local_blend_begins_at_its_start_fraction():
    # an empty mask (maps of zeros) makes a blended step's edit its source: before the start
    # the edit keeps its own latents, from the start on it is its source's
    from types import SimpleNamespace

    import torch

    from clp2p.attention.blend import LocalBlend

    latents = torch.stack([torch.zeros(4, 4, 4), torch.ones(4, 4, 4)])  # source, edit
    maps = torch.zeros(2, 16, 8)
    for start, blended in ((0.0, [True] * 4), (0.5, [False, False, True, True])):
        params = preset("p2p").with_(k=0.3, blend_start=start)
        plan = SimpleNamespace(
            branch=1, source=0, params=params, blend_source=[2], blend_target=[2]
        )
        blend = LocalBlend([plan], (4, 4), (4, 4), steps=4)
        out = [bool((blend(step, latents, maps)[1] == 0).all()) for step in range(4)]
        assert out == blended, start


def test_non_square_size_and_heatmaps(tiny_engine):
    settings = RenderSettings(seed=1, steps=2, guidance=5.0, width=48, height=32)
    result = tiny_engine.edit(
        SRC, [("a blue circle on a white background", preset("p2p"))], settings
    )
    assert result.images[1].shape == (32, 48, 3)
    maps = result.attention
    assert set(maps.cross) == {(16, 24), (8, 12)}
    word = maps.word_map(1, "blue")
    assert word.shape == maps.default_grid and word.dtype == np.float32
    assert maps.self_components.shape[:2] == (2, 6)
    with pytest.raises(KeyError):
        maps.word_map(0, "blue")


def test_bad_inputs_raise_clear_errors(tiny_engine):
    with pytest.raises(Clp2pError, match="same number of words.*refine"):
        tiny_engine.edit(
            SRC, [("a blue big circle on a white background", EditParams(kind="swap"))], SETTINGS
        )
    with pytest.raises(Clp2pError, match="'green' is not in the prompt"):
        tiny_engine.edit(
            SRC, [(SRC, EditParams(kind="reweight", reweight=(("green", 2.0),)))], SETTINGS
        )
    with pytest.raises(Clp2pError, match="multiple of"):
        tiny_engine.generate(SRC, RenderSettings(steps=2, width=30, height=32))
    with pytest.raises(Clp2pError, match="at most 77"):
        tiny_engine.generate("red " * 80, SETTINGS)


def test_chain_branch_uses_what_its_source_used(tiny_engine):
    mid = "a blue circle on a white background"
    end = "a blue square on a white background"
    p = preset("cl-p2p")
    chain = tiny_engine.render([Branch(SRC), Branch(mid, 0, p), Branch(end, 1, p)], SETTINGS)
    pair = tiny_engine.edit(SRC, [(mid, p)], SETTINGS)
    assert np.array_equal(chain.images[1], pair.images[1])
    assert not np.array_equal(chain.images[2], chain.images[1])


def test_blend_grid_is_the_same_unet_level_at_every_size():
    from types import SimpleNamespace

    from clp2p.attention.grids import attention_grids, blend_grid

    sd15 = SimpleNamespace(
        down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"],
        up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
        mid_block_type="UNetMidBlock2DCrossAttn",
    )
    shapes = SimpleNamespace(
        down_block_types=["CrossAttnDownBlock2D"] * 2 + ["DownBlock2D"],
        up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 2,
        mid_block_type="UNetMidBlock2DCrossAttn",
    )
    for config, latent, grid in [
        (sd15, (64, 64), (16, 16)),  # SD 1.x at 512 px: prompt-to-prompt's 16x16 maps
        (sd15, (96, 96), (24, 24)),  # 768 px: a quarter of the latent, the same layers
        (sd15, (32, 32), (8, 8)),  # 256 px
        (shapes, (16, 16), (4, 4)),  # the 64 px shapes model
        (sd15, (4, 4), (1, 1)),  # nothing fits: the smallest grid
    ]:
        assert blend_grid(attention_grids(config, latent), latent) == grid


def test_records_are_keyed_by_step_and_layer_name(tiny_engine):
    result = tiny_engine.render([Branch(SRC)], SETTINGS, recording=Recording(keep=KEEP_ALL))
    record = result.records[0]
    self_layers = {layer for _, layer in record.self_qkv}
    cross_layers = {layer for _, layer in record.cross}
    # every attention layer of the UNet, by its diffusers name
    assert self_layers | cross_layers == set(tiny_engine.pipe.unet.attn_processors)
    assert all(".attn1." in name for name in self_layers)
    assert all(".attn2." in name for name in cross_layers)
    steps = set(range(SETTINGS.steps))
    assert {step for step, _ in record.self_qkv} == {step for step, _ in record.cross} == steps


def test_render_options_do_not_leak_into_later_renders(tiny_engine):
    edit = [("a blue circle on a white background", preset("cl-p2p"))]
    before = tiny_engine.edit(SRC, edit, SETTINGS)
    seen = []
    odd = RenderOptions(batch_branches=True, preview_every=1, heatmaps=HeatmapOptions(0, 2))
    other = tiny_engine.edit(SRC, edit, SETTINGS, options=odd, on_step=seen.append)
    assert all(info.preview is not None for info in seen)
    assert set(other.attention.cross) == {(8, 8)} and other.attention.self_components.shape[1] == 2
    seen.clear()
    after = tiny_engine.edit(SRC, edit, SETTINGS, on_step=seen.append)
    # one pass per branch again: the same bits as before the batched render
    assert np.array_equal(after.latents, before.latents)
    assert all(np.array_equal(a, b) for a, b in zip(after.images, before.images, strict=True))
    assert all(info.preview is None for info in seen)
    assert set(after.attention.cross) == set(before.attention.cross) == {(16, 16), (8, 8)}
    assert after.attention.self_components.shape[1] == 6


def test_record_policy_chooses_once_after_the_first_step(tiny_engine):
    asked = []

    class Deepest:
        def choose(self, sizes: dict[int, int]) -> set[int]:
            asked.append(dict(sizes))
            return {max(sizes)}

    mid, end = "a blue circle on a white background", "a blue square on a white background"
    p = preset("cl-p2p")
    branches = [Branch(SRC), Branch(mid, 0, p), Branch(end, 1, p)]
    result = tiny_engine.render(branches, SETTINGS, recording=Recording(keep=Deepest()))
    assert list(result.records) == [2] and len(asked) == 1 and set(asked[0]) == {0, 1, 2}
    # the sizes asked about are projected over the whole render
    assert asked[0][2] == result.records[2].nbytes
    nothing = tiny_engine.render(branches, SETTINGS)
    assert nothing.records == {}
