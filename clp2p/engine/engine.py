"""The engine: renders a batch of branches (a root and its edits) with attention control.

No Qt here: the studio talks to :class:`Engine` from one worker thread and receives frozen
values (:class:`StepInfo`, :class:`RenderResult`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from clp2p.attention.control import (
    RECORDED,
    AttentionController,
    AttentionRecorder,
    BranchRecord,
    attention_grids,
    blend_grid,
)
from clp2p.attention.maps import AttentionMaps
from clp2p.attention.plan import Branch, build_plan, check_branches, resolve_edit
from clp2p.attention.processor import controlled_attention
from clp2p.engine.loading import DeviceChoice, choose_device, load_pipeline
from clp2p.errors import Clp2pError, RenderCancelled
from clp2p.model.align import PromptTokens, tokenize
from clp2p.model.imported import Inversion
from clp2p.model.params import EditParams, RenderSettings


@dataclass(frozen=True)
class HeatmapOptions:
    """Which attention data a render keeps: per-step cross-attention maps for grids of at
    most ``max_pixels`` pixels, and ``components`` self-attention SVD components."""

    max_pixels: int = 32 * 32
    components: int = 6


@dataclass(frozen=True)
class StepInfo:
    """Progress after a denoising step. ``preview``: (branches, H, W, 3) uint8 images of the
    current clean-image estimate, on the steps a preview was asked for."""

    step: int
    total: int
    elapsed: float
    eta: float
    preview: np.ndarray | None = None


@dataclass(frozen=True)
class RenderResult:
    """Images (H, W, 3) uint8 of every branch, the resolved inputs, the attention data and the
    final latents (branches, C, h, w) float32."""

    branches: tuple[Branch, ...]
    settings: RenderSettings
    images: tuple[np.ndarray, ...]
    attention: AttentionMaps
    latents: np.ndarray
    seconds: float
    records: dict[int, BranchRecord] = field(default_factory=dict, compare=False, repr=False)

    def pil(self, branch: int):
        from PIL import Image

        return Image.fromarray(self.images[branch])


class Engine:
    """A loaded Stable Diffusion model and the attention-controlled sampler (DDIM, eta 0)."""

    def __init__(self, pipe, choice: DeviceChoice, name: str = "") -> None:
        self.pipe = pipe
        self.device, self.dtype = choice.device, choice.dtype
        self.name = name
        self.tokenizer = pipe.tokenizer
        self.max_tokens = int(pipe.tokenizer.model_max_length)
        self.vae_scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
        ucfg = pipe.unet.config
        self.size_multiple = self.vae_scale * 2 ** (len(ucfg.down_block_types) - 1)
        self.native_size = int(ucfg.sample_size) * self.vae_scale
        # One UNet pass per branch and step (False) makes a branch's pixels independent of the
        # other branches in the render: a session node renders to the same bits from the root
        # or from its parent's record. True runs all branches in one batch (faster for
        # several branches on a GPU; images then differ by float rounding with the batch).
        self.batch_branches = False

    @classmethod
    def load(
        cls,
        model: str,
        device: str | None = None,
        dtype: str | None = None,
        *,
        allow_download: bool = False,
        prediction_type: str | None = None,
    ) -> Engine:
        choice = choose_device(device, dtype)
        pipe = load_pipeline(
            model, choice, allow_download=allow_download, prediction_type=prediction_type
        )
        return cls(pipe, choice, name=model)

    # ---- inputs ---------------------------------------------------------------------------
    def tokens(self, prompt: str) -> PromptTokens:
        return tokenize(prompt, self.tokenizer, self.max_tokens)

    def resolve_settings(self, settings: RenderSettings) -> RenderSettings:
        width = settings.width or self.native_size
        height = settings.height or self.native_size
        for name, value in (("--width", width), ("--height", height)):
            if value % self.size_multiple:
                lo = max(self.size_multiple, value // self.size_multiple * self.size_multiple)
                raise Clp2pError(
                    f"{name} {value} is not a multiple of {self.size_multiple} for this model: "
                    f"use {lo} or {lo + self.size_multiple}"
                )
        return replace(settings, width=width, height=height)

    def resolve(
        self, branches: list[Branch], source: str | None = None
    ) -> tuple[list[Branch], list[PromptTokens], PromptTokens | None]:
        """Validate every prompt and edit; returns the branches with resolved edit params.
        ``source``: the prompt of a recorded source that branch 0 edits."""
        check_branches(branches, recorded_source=source is not None)
        prompts = [self.tokens(b.prompt) for b in branches]
        src = self.tokens(source) if source is not None else None
        out = []
        for i, b in enumerate(branches):
            if b.source is None:
                out.append(b)
                continue
            origin = src if b.source == RECORDED else prompts[b.source]
            out.append(replace(b, edit=resolve_edit(origin, prompts[i], b.edit)))
        return out, prompts, src

    # ---- rendering ------------------------------------------------------------------------
    @torch.inference_mode()
    def encode(self, prompts: list[str]) -> torch.Tensor:
        """Text embeddings (len(prompts), T, dim), as diffusers' pipeline computes them."""
        ids = self.tokenizer(
            prompts,
            padding="max_length",
            max_length=self.max_tokens,
            truncation=True,
            return_tensors="pt",
        )
        encoder = self.pipe.text_encoder
        mask = None
        if getattr(encoder.config, "use_attention_mask", False):
            mask = ids.attention_mask.to(self.device)
        out = encoder(ids.input_ids.to(self.device), attention_mask=mask)[0]
        return out.to(self.dtype)

    @torch.no_grad()
    def encode_image(self, image: np.ndarray) -> torch.Tensor:
        """The latent (1, C, h, w) of an RGB uint8 image (H, W, 3): the VAE posterior's mean,
        scaled as the UNet expects."""
        vae = self.pipe.vae
        x = torch.tensor(np.asarray(image)).permute(2, 0, 1)[None].float()
        x = (x / 127.5 - 1.0).to(self.device, vae.dtype)
        z = vae.encode(x).latent_dist.mean
        if getattr(vae.config, "shift_factor", None):
            z = z - vae.config.shift_factor
        return (z * vae.config.scaling_factor).to(self.dtype)

    def _scheduler(self):
        from diffusers import DDIMScheduler

        return DDIMScheduler.from_config(self.pipe.scheduler.config)

    @torch.inference_mode()
    def decode(self, latents: torch.Tensor) -> list[np.ndarray]:
        """Latents (B, C, h, w) to RGB uint8 images (H, W, 3)."""
        vae = self.pipe.vae
        z = latents.to(vae.dtype) / vae.config.scaling_factor
        if getattr(vae.config, "shift_factor", None):
            z = z + vae.config.shift_factor
        image = vae.decode(z, return_dict=False)[0]
        arr = self.pipe.image_processor.postprocess(image, output_type="np")
        return [np.ascontiguousarray((a * 255).round().astype(np.uint8)) for a in arr]

    def render(
        self,
        branches: list[Branch],
        settings: RenderSettings,
        *,
        heatmaps: HeatmapOptions | None = None,
        on_step: Callable[[StepInfo], None] | None = None,
        cancel: Callable[[], bool] | None = None,
        preview_every: int = 0,
        source: BranchRecord | None = None,
        record: bool = False,
        record_limit: int | None = None,
        inversion: Inversion | None = None,
    ) -> RenderResult:
        """Render ``branches`` (see :attr:`batch_branches`). Every branch starts from the same
        noise (seed);
        each edit follows its source under its injection parameters.

        ``source``: a branch recorded by an earlier render (same settings) that branch 0
        edits (``Branch(prompt, -1, params)``), so its chain is not rendered again.
        ``record``: keep every branch's :class:`BranchRecord` in ``result.records``, unless
        they would exceed ``record_limit`` bytes (then none is kept).
        ``inversion``: start from an inverted image (see :mod:`clp2p.inversion`) instead of
        the seed's noise; its root is branch 0 unless ``source`` is given.
        ``cancel`` is checked before every step; when it returns True the render raises
        :class:`RenderCancelled` and the UNet's attention processors are restored."""
        start = time.perf_counter()
        settings = self.resolve_settings(settings)
        branches, prompts, src_tokens = self.resolve(
            branches, source.prompt if source is not None else None
        )
        if source is not None and len(source.latents) != settings.steps:
            raise Clp2pError("the recorded source was rendered with other settings")
        latent_hw = (settings.height // self.vae_scale, settings.width // self.vae_scale)
        if inversion is not None:
            inversion.check(settings)
            if tuple(inversion.latents.shape[2:]) != latent_hw:
                raise Clp2pError(
                    "the picture was inverted at another size: keep the session's size (or "
                    "import the picture again)"
                )
        heatmaps = heatmaps or HeatmapOptions()
        n = len(branches)
        steps = settings.steps
        grids = attention_grids(self.pipe.unet.config, latent_hw)
        used = max(p.length for p in prompts)
        recorder = AttentionRecorder(
            n, used, grids, blend_grid(grids, latent_hw), heatmaps.max_pixels, self.device
        )
        plans = [
            build_plan(
                i,
                b.source,
                src_tokens if b.source == RECORDED else prompts[b.source],
                prompts[i],
                b.edit,
                steps,
                self.max_tokens,
                self.device,
            )
            for i, b in enumerate(branches)
            if b.source is not None
        ]
        guided = settings.guidance > 1.0
        controller = AttentionController(
            plans,
            n,
            steps,
            guided,
            recorder,
            latent_hw,
            source_record=source,
            record=tuple(range(n)) if record else (),
            prompts=tuple(b.prompt for b in branches),
            record_limit=record_limit,
        )

        with torch.inference_mode():
            # one prompt at a time: an embedding must not depend on the other prompts
            cond = torch.cat([self.encode([b.prompt]) for b in branches])
            uncond = self._uncond(inversion) if guided else None
            scheduler = self._scheduler()
            scheduler.set_timesteps(steps, device=self.device)
            if inversion is None:
                channels = self.pipe.unet.config.in_channels
                generator = torch.Generator("cpu").manual_seed(settings.seed)
                init = torch.randn((1, channels, *latent_hw), generator=generator, dtype=self.dtype)
                init = init.to(self.device) * scheduler.init_noise_sigma
            else:
                init = torch.tensor(inversion.latents[:1]).to(self.device, self.dtype)
            latents = init.expand(n, -1, -1, -1)
            anchor = inversion is not None and inversion.method == "direct" and source is None
            groups = [list(range(n))] if self.batch_branches else [[b] for b in range(n)]
            with controlled_attention(self.pipe.unet, controller):
                loop_start = time.perf_counter()
                for i, t in enumerate(scheduler.timesteps):
                    if cancel is not None and cancel():
                        raise RenderCancelled(f"cancelled before step {i + 1} of {steps}")
                    controller.begin_step(i)
                    u = None if uncond is None else uncond[min(i, len(uncond) - 1)]
                    eps = []
                    for group in groups:
                        controller.begin_call(group)
                        eps.append(
                            self._predict(latents[group], t, cond[group], u, scheduler, settings)
                        )
                    eps = torch.cat(eps)
                    out = scheduler.step(eps, t, latents, eta=0.0)
                    prev = out.prev_sample
                    if anchor:  # direct inversion: the root stays on the inversion trajectory
                        prev = prev.clone()
                        prev[0] = torch.tensor(inversion.latents[i + 1]).to(prev)
                    latents = controller.end_step(prev)
                    if on_step is not None:
                        elapsed = time.perf_counter() - loop_start
                        preview = None
                        if preview_every and ((i + 1) % preview_every == 0 or i + 1 == steps):
                            preview = np.stack(self.decode(out.pred_original_sample))
                        on_step(
                            StepInfo(
                                i + 1, steps, elapsed, elapsed / (i + 1) * (steps - i - 1), preview
                            )
                        )
            if cancel is not None and cancel():
                raise RenderCancelled("cancelled before decoding")
            # one latent at a time, for the same reason as the UNet passes
            images = [image for z in latents.split(1) for image in self.decode(z)]
        return RenderResult(
            branches=tuple(branches),
            settings=settings,
            images=tuple(images),
            attention=recorder.result(tuple(prompts), heatmaps.components),
            latents=latents.float().cpu().numpy(),
            seconds=time.perf_counter() - start,
            records=controller.records,
        )

    def _uncond(self, inversion: Inversion | None) -> torch.Tensor:
        """Unconditional embeddings (steps or 1, 1, T, D): the empty prompt's; null-text's
        optimised ones per step; the source prompt's for negative-prompt inversion."""
        if inversion is not None and inversion.uncond is not None:
            return torch.tensor(inversion.uncond).to(self.device, self.dtype)[:, None]
        if inversion is not None and inversion.method == "negative-prompt":
            return self.encode([inversion.prompt])[None]
        return self.encode([""])[None]

    def _predict(self, latents, t, cond, uncond, scheduler, settings) -> torch.Tensor:
        """The guided noise prediction of ``latents`` (b, C, h, w) with embeddings ``cond``."""
        b = latents.shape[0]
        if uncond is None:
            model_in = scheduler.scale_model_input(latents, t)
            return self.pipe.unet(model_in, t, encoder_hidden_states=cond).sample
        model_in = scheduler.scale_model_input(torch.cat([latents, latents]), t)
        embeds = torch.cat([uncond.expand(b, -1, -1), cond])
        eps_u, eps_c = self.pipe.unet(model_in, t, encoder_hidden_states=embeds).sample.chunk(2)
        return eps_u + settings.guidance * (eps_c - eps_u)

    # ---- conveniences ---------------------------------------------------------------------
    def generate(self, prompt: str, settings: RenderSettings, **kwargs) -> RenderResult:
        return self.render([Branch(prompt)], settings, **kwargs)

    def edit(
        self,
        source: str,
        targets: list[tuple[str, EditParams]],
        settings: RenderSettings,
        **kwargs,
    ) -> RenderResult:
        """One source and one or more targets edited from it, rendered together."""
        branches = [Branch(source)] + [Branch(p, 0, e) for p, e in targets]
        return self.render(branches, settings, **kwargs)
