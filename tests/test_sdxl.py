"""SDXL: the engine conditions the UNet as diffusers' SDXL pipeline does (two text encoders,
pooled embedding, size micro-conditioning, zeros for the empty unconditional prompt), and
every edit, inversion and session feature works on a model of SDXL's layout (a toy-sized one
built in memory)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from clp2p.engine.engine import Engine
from clp2p.engine.inversion import invert
from clp2p.engine.loading import choose_device
from clp2p.errors import Clp2pError
from clp2p.model.params import Branch, CrossWindow, StepWindow
from clp2p.model.presets import preset
from clp2p.model.session import Session
from clp2p.model.settings import RenderSettings
from clp2p.workflows.session_render import SessionRenderer, apply
from tiny import diffusers_image

SRC = "a red circle on a white background"
TGT = "a blue circle on a white background"
SETTINGS = RenderSettings(seed=3, steps=3, guidance=5.0, width=32, height=32)


@pytest.fixture(scope="module")
def xl():
    from tiny import tiny_xl_pipeline

    return Engine(tiny_xl_pipeline(), choose_device("cpu", "fp32"), name="tiny-xl")


def test_plain_generation_equals_diffusers_sdxl_pipeline(xl):
    assert xl.text.xl and xl.max_tokens == 77
    ours = xl.generate(SRC, SETTINGS).images[0]
    theirs = diffusers_image(xl.pipe, SRC, SETTINGS)
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1
    other = RenderSettings(seed=3, steps=3, guidance=5.0, width=48, height=32)
    ours = xl.generate(SRC, other).images[0]  # the size conditioning follows the render
    theirs = diffusers_image(xl.pipe, SRC, other)
    assert ours.shape == (32, 48, 3)
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1


def test_unconditional_half_is_zeros_when_the_model_asks():
    from tiny import tiny_xl_pipeline

    zeros = Engine(tiny_xl_pipeline(), choose_device("cpu", "fp32")).unconditional()
    assert not zeros.tokens.any() and not zeros.pooled.any()
    pipe = tiny_xl_pipeline(force_zeros=False)
    empty = Engine(pipe, choose_device("cpu", "fp32"))
    u = empty.unconditional()
    assert u.tokens.any() and u.pooled.shape == (1, 32) and u.tokens.shape == (1, 77, 64)
    theirs = diffusers_image(pipe, SRC, SETTINGS)  # the pipeline then encodes the empty prompt
    ours = empty.generate(SRC, SETTINGS).images[0]
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1


@pytest.mark.parametrize("name", ["p2p", "cl-p2p"])
def test_swap_to_same_prompt_reproduces_the_source(xl, name):
    result = xl.edit(SRC, [(SRC, preset(name))], SETTINGS)
    assert np.array_equal(result.images[0], result.images[1])


@pytest.mark.parametrize(
    "kind, target, extra",
    [
        ("swap", TGT, {}),
        ("refine", "a red circle on a white background at night", {}),
        ("reweight", SRC, {"reweight": (("red", 8.0),), "cross": CrossWindow(StepWindow(0, 1))}),
        ("swap", TGT, {"k": 0.3, "blend_words": ("red", "blue")}),
        ("swap", TGT, {"v_blend": 0.5, "v_window": StepWindow(0.0, 0.5), "v_layers": "both"}),
    ],
)
def test_every_edit_renders_on_sdxl(xl, kind, target, extra):
    params = preset("cl-p2p").with_(kind=kind, self_res=None, **extra)
    result = xl.edit(SRC, [(target, params)], SETTINGS)
    assert len(result.images) == 2 and result.images[1].shape == (32, 32, 3)
    assert not np.array_equal(result.images[0], result.images[1])
    assert result.images[0].std() > 0


def test_heatmap_grids_follow_the_model(xl):
    result = xl.generate(SRC, SETTINGS)
    # SDXL has no attention at the full latent grid: 8x8 and 4x4 for 16x16 latents
    assert set(result.attention.grids) == {(8, 8), (4, 4)}
    assert result.attention.word_map(0, "circle").shape[:2] in ((8, 8), (4, 4))


def test_session_chain_renders_the_same_from_the_cache_as_cold(xl):
    session = Session.new(SRC, SETTINGS, xl.name)
    session, child = session.add_edit("n1", TGT, preset("p2p"))
    session, grandchild = session.add_edit(child, TGT.replace("circle", "square"), preset("p2p"))
    renderer = SessionRenderer(xl)
    for node_id in ("n1", child):
        session = apply(session, renderer.render(session, node_id))
    warm = renderer.render(session, grandchild)
    cold = SessionRenderer(xl).render(session, grandchild, use_cache=False)
    assert warm.computed == 1 and cold.computed == 3 and warm.hash == cold.hash
    session = apply(session, warm)
    session, back = session.add_cycle(grandchild, "n1")  # edit back to the root
    cycle = renderer.render(session, back)
    assert cycle.computed == 1 and set(cycle.metrics) >= {"mae", "psnr"}


@pytest.mark.parametrize("method", ["null-text", "negative-prompt", "direct"])
def test_inversions_on_sdxl(xl, method):
    settings = RenderSettings(seed=0, steps=3, guidance=3.0, width=32, height=32)
    picture = xl.generate(SRC, settings).images[0]
    inv = invert(xl, picture, SRC, settings, method, inner_steps=2).inversion
    if method == "null-text":
        assert inv.uncond.shape == (3, 77, 64)  # both encoders' token embeddings
    branches = [Branch(SRC), Branch(TGT, 0, preset("cl-p2p"))]
    result = xl.render(branches, settings, inversion=inv)
    assert len(result.images) == 2 and result.images[1].std() > 0


def test_tokenizers_that_disagree_on_words_are_refused(tmp_path):
    import shutil

    from transformers import CLIPTokenizer

    from clp2p.resources import resources_dir
    from tiny import tiny_xl_pipeline

    # a second tokenizer without the merge that makes "circle" one token splits it in two
    folder = tmp_path / "tokenizer_2"
    shutil.copytree(resources_dir() / "tokenizers" / "clip-sd2", folder)
    merges = (folder / "merges.txt").read_text().splitlines()
    (folder / "merges.txt").write_text("\n".join(m for m in merges if m != "cir cle</w>") + "\n")
    pipe = tiny_xl_pipeline()
    pipe.tokenizer_2 = CLIPTokenizer.from_pretrained(str(folder))
    engine = Engine(pipe, choose_device("cpu", "fp32"))
    with pytest.raises(Clp2pError, match="two tokenizers split 'circle'"):
        engine.tokens(SRC)
    engine.tokens("a red square")  # words both split alike are fine


def test_sdxl_folder_loads_with_the_stock_pipeline_class(tmp_path):
    from diffusers import StableDiffusionXLPipeline

    from tiny import save_tiny_xl

    engine = Engine.load(str(save_tiny_xl(tmp_path / "xl")), "cpu", "fp32")
    assert isinstance(engine.pipe, StableDiffusionXLPipeline) and engine.text.xl
    assert engine.generate(SRC, SETTINGS).images[0].shape == (32, 32, 3)


def test_single_file_sdxl_uses_the_shipped_sdxl_configs_and_refuses_the_refiner(tmp_path):
    from safetensors.torch import save_file

    from clp2p.engine.loading import _REFINER_KEY, _XL_KEY, _single_file_config
    from clp2p.resources import resources_dir

    base = tmp_path / "sdxl.safetensors"
    save_file({_XL_KEY: torch.zeros(4)}, str(base))
    config = _single_file_config(base, None)
    assert config == resources_dir() / "configs" / "sdxl"
    refiner = tmp_path / "refiner.safetensors"
    save_file({_REFINER_KEY: torch.zeros(4)}, str(refiner))
    with pytest.raises(Clp2pError, match="refiner"):
        Engine.load(str(refiner), "cpu", "fp32")


def test_only_sd_and_sdxl_pipelines_load(tmp_path):
    import json

    from tiny import save_tiny_xl

    folder = save_tiny_xl(tmp_path / "xl")
    index = json.loads((folder / "model_index.json").read_text())
    for name, text_encoder, message in [
        ("StableDiffusionXLImg2ImgPipeline", [None, None], "refiner"),
        ("FluxPipeline", ["transformers", "CLIPTextModel"], "FluxPipeline pipeline"),
    ]:
        (folder / "model_index.json").write_text(
            json.dumps({**index, "_class_name": name, "text_encoder": text_encoder})
        )
        with pytest.raises(Clp2pError, match=message):
            Engine.load(str(folder), "cpu", "fp32")


def test_sdxl_vae_runs_in_float32_when_the_model_is_float16():
    from clp2p.engine.vae import keep_vae_precise
    from tiny import tiny_pipeline, tiny_xl_pipeline

    xl = tiny_xl_pipeline().to(dtype=torch.float16)
    keep_vae_precise(xl, torch.float16, xl=True)
    assert xl.vae.dtype == torch.float32 and xl.unet.dtype == torch.float16
    sd = tiny_pipeline().to(dtype=torch.float16)  # SD 1.x / 2.x keep their float16 VAE
    keep_vae_precise(sd, torch.float16, xl=False)
    assert sd.vae.dtype == torch.float16


def test_sdxl_from_the_hub_cache(tmp_path, monkeypatch):
    import shutil

    from diffusers import StableDiffusionXLPipeline

    from tiny import save_tiny_xl

    folder = save_tiny_xl(tmp_path / "xl")
    repo = tmp_path / "hub" / "models--someone--tiny-xl"
    shutil.copytree(folder, repo / "snapshots" / "0123abc")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abc")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    engine = Engine.load("someone/tiny-xl", "cpu", "fp32")
    assert isinstance(engine.pipe, StableDiffusionXLPipeline)
    from clp2p.engine.families import is_xl

    assert is_xl("someone/tiny-xl")
