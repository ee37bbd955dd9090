"""Architecture of the shapes-world model: tiny Stable-Diffusion-format components.

Everything here builds untrained diffusers / transformers modules from a frozen config, so the
training script and the CPU tests share one definition of the model.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from clp2p.model.card import CARD_FORMAT

CLIP_TOKENIZER_DIR = Path(__file__).resolve().parents[2] / "resources" / "tokenizers" / "clip"
"""The real CLIP BPE vocabulary (vocab.json, merges.txt) shipped with the repo."""

BOS_ID, EOS_ID, VOCAB_SIZE = 49406, 49407, 49408
"""CLIP BPE special tokens and vocabulary size."""

CARD = {
    "format": CARD_FORMAT,
    "version": 1,
    "metrics": ["mask_iou"],
    "scores": ["shapes_edit"],
    "sampling": {"steps": 30, "guidance": 4.0},
    # the full 16x16 latent grid: there the colour and shape words' maps sit on their objects
    # (mean IoU 0.60 / 0.65 at a half-peak threshold, `clp2p eval shapes --task localise`),
    # against 0.40 / 0.46 at prompt-to-prompt's quarter of the latent (4x4); local blend and
    # the heatmaps use it
    "attention_grid": 1.0,
}
"""The shapes model's card (:mod:`clp2p.model.card`), written beside every export: its
reversal metric and edit scores (plug-ins), its recommended sampling, and its attention grid."""


@dataclass(frozen=True)
class ModelConfig:
    """Sizes of every component. Defaults are the shipped model's base run; its decoder stage
    (:mod:`clp2p.shapes.train_decoder`) then adds one resnet per VAE block."""

    image_size: int = 64
    vae_channels: tuple[int, ...] = (16, 32, 64)  # len - 1 downsamplings: 64 px -> 16 latents
    vae_layers: int = 1
    latent_channels: int = 4
    text_hidden: int = 64
    text_layers: int = 2
    text_heads: int = 4
    max_tokens: int = 16
    unet_channels: tuple[int, ...] = (64, 96, 96)
    unet_layers: int = 1
    unet_heads: int = 8
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"

    @property
    def latent_size(self) -> int:
        """Side of the latent grid."""
        return self.image_size // 2 ** (len(self.vae_channels) - 1)


def build_vae(cfg: ModelConfig) -> AutoencoderKL:
    """AutoencoderKL mapping (B, 3, S, S) in [-1, 1] to (B, C, S/4, S/4) latents."""
    n = len(cfg.vae_channels)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * n,
        up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=cfg.vae_channels,
        layers_per_block=cfg.vae_layers,
        latent_channels=cfg.latent_channels,
        norm_num_groups=16,
        sample_size=cfg.image_size,
    )


def build_text_encoder(cfg: ModelConfig) -> CLIPTextModel:
    """Small CLIP text transformer over the full CLIP BPE vocabulary."""
    config = CLIPTextConfig(
        vocab_size=VOCAB_SIZE,
        hidden_size=cfg.text_hidden,
        intermediate_size=4 * cfg.text_hidden,
        num_hidden_layers=cfg.text_layers,
        num_attention_heads=cfg.text_heads,
        max_position_embeddings=cfg.max_tokens,
        projection_dim=cfg.text_hidden,
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=EOS_ID,
    )
    return CLIPTextModel(config)


def build_unet(cfg: ModelConfig) -> UNet2DConditionModel:
    """Conditional UNet with self- and cross-attention at every level but the coarsest."""
    n = len(cfg.unet_channels)
    down = ("CrossAttnDownBlock2D",) * (n - 1) + ("DownBlock2D",)
    up = ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (n - 1)
    return UNet2DConditionModel(
        sample_size=cfg.latent_size,
        in_channels=cfg.latent_channels,
        out_channels=cfg.latent_channels,
        down_block_types=down,
        up_block_types=up,
        block_out_channels=cfg.unet_channels,
        layers_per_block=cfg.unet_layers,
        cross_attention_dim=cfg.text_hidden,
        # diffusers reads attention_head_dim as the number of heads in this UNet.
        attention_head_dim=cfg.unet_heads,
        norm_num_groups=16,
    )


def build_scheduler(cfg: ModelConfig) -> DDIMScheduler:
    """DDIM over a cosine schedule, epsilon prediction, no clipping.

    The cosine schedule reaches almost zero signal at the last timestep (alpha_bar(999) ~ 2e-9),
    so the model learns to pick the background colour from the prompt alone. Sampling must
    not start exactly there, though: DDIM's first update multiplies the epsilon error by
    sqrt(alpha_bar(t_next) / alpha_bar(999)), ~40x for 25 steps with trailing spacing, which
    turned every sample into noise. Leading spacing with offset 1 (Stable Diffusion's own
    setting) starts at 961 for 25 steps, where that factor is ~2.
    """
    return DDIMScheduler(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_schedule=cfg.beta_schedule,
        prediction_type="epsilon",
        clip_sample=False,
        set_alpha_to_one=True,
        steps_offset=1,
        timestep_spacing="leading",
    )


def load_tokenizer(cfg: ModelConfig, source: Path = CLIP_TOKENIZER_DIR) -> CLIPTokenizer:
    """CLIP BPE tokenizer padded / truncated to ``cfg.max_tokens``.

    Loaded with ``from_pretrained``: with transformers 5, ``CLIPTokenizer(vocab_file=...)``
    silently builds a two-token vocabulary and maps every caption to BOS + EOS.
    """
    tokenizer = CLIPTokenizer.from_pretrained(source, model_max_length=cfg.max_tokens)
    if len(tokenizer) != VOCAB_SIZE:
        raise ValueError(f"{source} holds {len(tokenizer)} tokens, expected {VOCAB_SIZE}")
    return tokenizer


def write_tokenizer(cfg: ModelConfig, folder: Path, source: Path = CLIP_TOKENIZER_DIR) -> None:
    """Copy the BPE files into ``folder`` with a config that sets ``model_max_length``."""
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("vocab.json", "merges.txt"):
        shutil.copyfile(source / name, folder / name)
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
    }
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": cfg.max_tokens,
        "do_lower_case": True,
        "clean_up_tokenization_spaces": True,
        **special,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
