"""Checks of the weight-less diffusers config folders in resources/configs/.

These folders mirror the published Hugging Face repositories
runwayml/stable-diffusion-v1-5 (sd15), stabilityai/stable-diffusion-2-base
(sd2-base) and stabilityai/stable-diffusion-2-1 (sd21), minus the weights, the
safety checker and the feature extractor, and with a DDIM scheduler. They are
used as ``config=`` for single-file checkpoint loading and to build
random-weight models for benchmarks.

Only configs are read; parameter counts are computed on the ``meta`` device so
no real memory is allocated. CPU only, no network.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "resources" / "configs"
TOKENIZERS = ROOT / "resources" / "tokenizers"

# Expected values per folder.
SPECS = {
    "sd15": {
        "tokenizer": "clip",
        "pad_token_id": 49407,
        "resolution": 512,
        "prediction_type": "epsilon",
        "unet": {
            "cross_attention_dim": 768,
            "attention_head_dim": 8,
            "use_linear_projection": False,
            "upcast_attention": False,
            "sample_size": 64,
        },
        "text": {
            "hidden_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "intermediate_size": 3072,
            "hidden_act": "quick_gelu",
            "projection_dim": 768,
        },
        "params": {"unet": 859_520_964, "vae": 83_653_863, "text_encoder": 123_060_480},
    },
    "sd2-base": {
        "tokenizer": "clip-sd2",
        "pad_token_id": 0,
        "resolution": 512,
        "prediction_type": "epsilon",
        "unet": {
            "cross_attention_dim": 1024,
            "attention_head_dim": [5, 10, 20, 20],
            "use_linear_projection": True,
            "upcast_attention": False,
            "sample_size": 64,
        },
        "text": {
            "hidden_size": 1024,
            "num_hidden_layers": 23,
            "num_attention_heads": 16,
            "intermediate_size": 4096,
            "hidden_act": "gelu",
            "projection_dim": 512,
        },
        "params": {"unet": 865_910_724, "vae": 83_653_863, "text_encoder": 340_387_840},
    },
    "sd21": {
        "tokenizer": "clip-sd2",
        "pad_token_id": 0,
        "resolution": 768,
        "prediction_type": "v_prediction",
        "unet": {
            "cross_attention_dim": 1024,
            "attention_head_dim": [5, 10, 20, 20],
            "use_linear_projection": True,
            "upcast_attention": True,
            "sample_size": 96,
        },
        "text": {
            "hidden_size": 1024,
            "num_hidden_layers": 23,
            "num_attention_heads": 16,
            "intermediate_size": 4096,
            "hidden_act": "gelu",
            "projection_dim": 512,
        },
        "params": {"unet": 865_910_724, "vae": 83_653_863, "text_encoder": 340_387_840},
    },
}

NAMES = sorted(SPECS)


def _unet_config(folder: Path) -> dict:
    return diffusers.UNet2DConditionModel.load_config(folder / "unet")


def _vae_config(folder: Path) -> dict:
    return diffusers.AutoencoderKL.load_config(folder / "vae")


def _text_config(folder: Path):
    return transformers.CLIPTextConfig.from_pretrained(folder / "text_encoder")


def test_all_folders_present():
    assert sorted(p.name for p in CONFIGS.iterdir() if p.is_dir()) == [*NAMES, "sdxl"]


def test_sdxl_folder_is_sdxl_base_without_weights():
    """resources/configs/sdxl mirrors stabilityai/stable-diffusion-xl-base-1.0: the parameter
    counts of its components equal the published model's."""
    folder = CONFIGS / "sdxl"
    assert not [p for p in folder.rglob("*") if p.suffix in {".safetensors", ".bin", ".ckpt"}]
    index = diffusers.DiffusionPipeline.load_config(folder)
    assert index["_class_name"] == "StableDiffusionXLPipeline"
    assert index["force_zeros_for_empty_prompt"] is True
    for sub, source in (("tokenizer", "clip"), ("tokenizer_2", "clip-sd2")):
        for file in (TOKENIZERS / source).iterdir():
            assert (folder / sub / file.name).read_bytes() == file.read_bytes()
    with torch.device("meta"):
        unet = diffusers.UNet2DConditionModel.from_config(_unet_config(folder))
        vae = diffusers.AutoencoderKL.from_config(_vae_config(folder))
        text = transformers.CLIPTextModel(_text_config(folder))
        text_2 = transformers.CLIPTextModelWithProjection(
            transformers.CLIPTextConfig.from_pretrained(folder / "text_encoder_2")
        )
    counts = [sum(p.numel() for p in m.parameters()) for m in (unet, vae, text, text_2)]
    assert counts == [2_567_463_684, 83_653_863, 123_060_480, 694_659_840]
    assert _vae_config(folder)["force_upcast"] is True
    assert _vae_config(folder)["scaling_factor"] == pytest.approx(0.13025)


@pytest.mark.parametrize("name", NAMES)
def test_layout_and_model_index(name):
    folder = CONFIGS / name
    for rel in (
        "model_index.json",
        "unet/config.json",
        "vae/config.json",
        "text_encoder/config.json",
        "scheduler/scheduler_config.json",
        "tokenizer/vocab.json",
        "tokenizer/merges.txt",
        "tokenizer/tokenizer_config.json",
        "tokenizer/special_tokens_map.json",
    ):
        assert (folder / rel).is_file(), f"{name}/{rel} missing"
    # Weight-less: no checkpoint files anywhere in the folder.
    suffixes = {".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".msgpack"}
    assert not [p for p in folder.rglob("*") if p.suffix in suffixes]

    index = diffusers.DiffusionPipeline.load_config(folder)
    assert index["_class_name"] == "StableDiffusionPipeline"
    assert index["safety_checker"] == [None, None]
    assert index["feature_extractor"] == [None, None]
    assert index["requires_safety_checker"] is False
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert index["vae"] == ["diffusers", "AutoencoderKL"]
    assert index["text_encoder"] == ["transformers", "CLIPTextModel"]
    assert index["tokenizer"] == ["transformers", "CLIPTokenizer"]
    assert index["scheduler"] == ["diffusers", "DDIMScheduler"]


@pytest.mark.parametrize("name", NAMES)
def test_unet_vae_text_encoder_fields(name):
    spec = SPECS[name]
    folder = CONFIGS / name
    unet = _unet_config(folder)
    vae = _vae_config(folder)
    text = _text_config(folder)

    for key, value in spec["unet"].items():
        assert unet[key] == value, f"{name} unet.{key}"
    assert unet["block_out_channels"] == [320, 640, 1280, 1280]
    assert unet["layers_per_block"] == 2
    assert unet["in_channels"] == unet["out_channels"] == vae["latent_channels"] == 4

    for key, value in spec["text"].items():
        assert getattr(text, key) == value, f"{name} text_encoder.{key}"
    assert text.vocab_size == 49408
    assert text.max_position_embeddings == 77
    # eos_token_id 2 selects CLIP's argmax pooling in transformers (as published).
    assert text.eos_token_id == 2

    # The UNet attends to the text encoder's last hidden state.
    assert unet["cross_attention_dim"] == text.hidden_size

    assert vae["block_out_channels"] == [128, 256, 512, 512]
    assert vae["scaling_factor"] == pytest.approx(0.18215)
    downscale = 2 ** (len(vae["block_out_channels"]) - 1)
    assert unet["sample_size"] * downscale == spec["resolution"]
    assert vae["sample_size"] == spec["resolution"]


@pytest.mark.parametrize("name", NAMES)
def test_tokenizer(name):
    spec = SPECS[name]
    folder = CONFIGS / name
    # The tokenizer subfolder is a verbatim copy of the matching resources/tokenizers folder.
    source = TOKENIZERS / spec["tokenizer"]
    copied = sorted(p.name for p in (folder / "tokenizer").iterdir())
    assert copied == sorted(p.name for p in source.iterdir())
    for file in copied:
        assert (folder / "tokenizer" / file).read_bytes() == (source / file).read_bytes()

    tokenizer = transformers.CLIPTokenizer.from_pretrained(str(folder), subfolder="tokenizer")
    text = _text_config(folder)
    assert tokenizer.model_max_length == text.max_position_embeddings == 77
    assert len(tokenizer) == text.vocab_size
    assert tokenizer.pad_token_id == spec["pad_token_id"]
    assert tokenizer("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]


@pytest.mark.parametrize("name", NAMES)
def test_scheduler(name):
    folder = CONFIGS / name
    raw = json.loads((folder / "scheduler" / "scheduler_config.json").read_text())
    assert raw["_class_name"] == "DDIMScheduler"

    scheduler = diffusers.DDIMScheduler.from_pretrained(str(folder), subfolder="scheduler")
    config = scheduler.config
    assert config.prediction_type == SPECS[name]["prediction_type"]
    assert config.beta_schedule == "scaled_linear"
    assert config.beta_start == pytest.approx(0.00085)
    assert config.beta_end == pytest.approx(0.012)
    assert config.num_train_timesteps == 1000
    assert config.steps_offset == 1
    assert config.clip_sample is False
    assert config.set_alpha_to_one is False
    assert config.timestep_spacing == "leading"

    # SD's "scaled_linear" betas: linspace of sqrt(beta), squared.
    expected = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    assert torch.allclose(scheduler.betas.double(), expected, rtol=1e-5)
    assert float(scheduler.final_alpha_cumprod) == pytest.approx(1 - 0.00085, rel=1e-6)

    scheduler.set_timesteps(50)
    assert scheduler.timesteps[0].item() == 981
    assert scheduler.timesteps[-1].item() == 1


@pytest.mark.parametrize("name", NAMES)
def test_parameter_counts_on_meta_device(name):
    """Instantiate each model on the meta device (no memory) and count parameters."""
    folder = CONFIGS / name
    expected = SPECS[name]["params"]
    with torch.device("meta"):
        unet = diffusers.UNet2DConditionModel.from_config(_unet_config(folder))
        counts = {"unet": sum(p.numel() for p in unet.parameters())}
        del unet
        vae = diffusers.AutoencoderKL.from_config(_vae_config(folder))
        counts["vae"] = sum(p.numel() for p in vae.parameters())
        del vae
        text_encoder = transformers.CLIPTextModel(_text_config(folder))
        counts["text_encoder"] = sum(p.numel() for p in text_encoder.parameters())
        del text_encoder
    assert counts == expected
