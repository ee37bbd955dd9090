"""Tiny Stable Diffusion components built in memory for CPU tests (random weights)."""

from __future__ import annotations

from pathlib import Path

import torch

from clp2p.resources import resources_dir


def tiny_vae(**config):
    """A two-level VAE (latents at half the image size)."""
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        block_out_channels=(16, 32),
        latent_channels=4,
        norm_num_groups=16,
        sample_size=32,
        **config,
    )


def diffusers_image(pipe, prompt: str, settings, **kw):
    """What diffusers' own pipeline renders for ``prompt`` with ``settings`` (its sampler,
    Karras sigmas and negative prompt), as uint8 (H, W, 3)."""
    import numpy as np

    from clp2p.engine.schedulers import make_scheduler

    original = pipe.scheduler
    pipe.scheduler = make_scheduler(original.config, settings.scheduler, settings.karras)
    try:
        image = pipe(
            prompt,
            negative_prompt=settings.negative or None,
            num_inference_steps=settings.steps,
            guidance_scale=settings.guidance,
            height=settings.height,
            width=settings.width,
            generator=torch.Generator("cpu").manual_seed(settings.seed),
            output_type="np",
            **kw,
        ).images[0]
    finally:
        pipe.scheduler = original
    return (image * 255).round().astype(np.uint8)


def tiny_pipeline(prediction_type: str = "epsilon", seed: int = 0):
    """A StableDiffusionPipeline with cross- and self-attention at two grids (e.g. 16x16 and
    8x8 for 32x32 images), the real CLIP tokenizer and a DDIM scheduler."""
    from diffusers import (
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=4,
        norm_num_groups=16,
    )
    vae = tiny_vae()
    text = CLIPTextModel(
        CLIPTextConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            vocab_size=49408,
            max_position_embeddings=77,
            bos_token_id=49406,
            eos_token_id=49407,
        )
    )
    tokenizer = CLIPTokenizer.from_pretrained(str(resources_dir() / "tokenizers" / "clip"))
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        prediction_type=prediction_type,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_tiny(path: Path, prediction_type: str = "epsilon") -> Path:
    tiny_pipeline(prediction_type).save_pretrained(str(path))
    return path


def tiny_xl_pipeline(seed: int = 0, force_zeros: bool = True):
    """A StableDiffusionXLPipeline of SDXL's layout at toy size: two text encoders (the
    second with a projection) over CLIP's tokenizer and SD 2's (padding '!'), a UNet with
    the added text-time embedding, no attention at the full latent grid and a deeper
    transformer stack at the lowest level (grids 8x8 and 4x4 for 32x32 images)."""
    from diffusers import (
        EulerDiscreteScheduler,
        StableDiffusionXLPipeline,
        UNet2DConditionModel,
    )
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        CLIPTextModelWithProjection,
        CLIPTokenizer,
    )

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        transformer_layers_per_block=(1, 1, 2),
        attention_head_dim=(2, 4, 4),
        cross_attention_dim=64,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 32,
        norm_num_groups=16,
    )
    vae = tiny_vae(scaling_factor=0.13025, force_upcast=True)
    common = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        vocab_size=49408,
        max_position_embeddings=77,
        bos_token_id=49406,
        eos_token_id=49407,
    )
    text = CLIPTextModel(CLIPTextConfig(**common))
    text_2 = CLIPTextModelWithProjection(CLIPTextConfig(projection_dim=32, **common))
    tokenizers = resources_dir() / "tokenizers"
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text,
        text_encoder_2=text_2,
        tokenizer=CLIPTokenizer.from_pretrained(str(tokenizers / "clip")),
        tokenizer_2=CLIPTokenizer.from_pretrained(str(tokenizers / "clip-sd2")),
        unet=unet,
        scheduler=EulerDiscreteScheduler(
            beta_start=0.00085,
            beta_end=0.012,
            beta_schedule="scaled_linear",
            steps_offset=1,
            timestep_spacing="leading",
        ),
        force_zeros_for_empty_prompt=force_zeros,
        add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_tiny_xl(path: Path) -> Path:
    tiny_xl_pipeline().save_pretrained(str(path))
    return path
