"""The engine: renders a batch of branches (a root and its edits) with attention control, in
stages: checked inputs, the edit plans in an :class:`AttentionController`, the denoising loop
with the controller in every attention layer, the decode. No Qt here: the studio talks to
:class:`Engine` from one worker thread and receives frozen values (:class:`StepInfo`,
:class:`RenderResult`)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from clp2p.attention.control import AttentionController
from clp2p.attention.grids import attention_grids, blend_grid, self_layer_numbers
from clp2p.attention.maps import AttentionMaps
from clp2p.attention.plan import build_plans
from clp2p.attention.processor import controlled_attention
from clp2p.attention.recorder import AttentionRecorder, HeatmapOptions
from clp2p.attention.records import BranchRecord, BranchRecorder, Recording
from clp2p.engine import vae as vae_io
from clp2p.engine.loading import DeviceChoice, choose_device, fits_memory, load_pipeline, model_card
from clp2p.engine.schedulers import make_scheduler, step_options
from clp2p.engine.text import Embeds, TextEncoders
from clp2p.errors import Clp2pError, RenderCancelled
from clp2p.model.adapters import Adapter
from clp2p.model.align import PromptTokens, tokenize
from clp2p.model.card import ModelCard
from clp2p.model.edits import check_branches, check_layers, resolve_edit
from clp2p.model.imported import Inversion
from clp2p.model.params import RECORDED, Branch, EditParams
from clp2p.model.settings import RenderSettings


@dataclass(frozen=True)
class RenderOptions:
    """How one render runs, apart from what it renders.

    ``batch_branches``: False (the default) runs the UNet once per branch and step, which
    makes a branch's pixels independent of the other branches in the render: a session node
    renders to the same bits from the root or from its parent's record. True runs all
    branches in one batch: faster for several branches on a GPU; images then differ by float
    rounding with the batch. ``preview_every``: a preview image in :class:`StepInfo` every
    this many steps and at the last one (0: none). ``heatmaps``: the attention data kept."""

    batch_branches: bool = False
    preview_every: int = 0
    heatmaps: HeatmapOptions = field(default_factory=HeatmapOptions)


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
    final latents (branches, C, h, w) float32; ``records``: the branch records the render's
    :class:`Recording` chose to keep, by branch."""

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


@dataclass(frozen=True)
class _Inputs:
    """A render's checked inputs: resolved branches, their prompts' tokens, the recorded
    source's prompt tokens (None without a recorded source), settings and the latent size."""

    branches: tuple[Branch, ...]
    prompts: tuple[PromptTokens, ...]
    recorded: PromptTokens | None
    settings: RenderSettings
    latent_hw: tuple[int, int]  # (h, w)


class Engine:
    """A loaded Stable Diffusion model and the attention-controlled sampler (DDIM, eta 0)."""

    def __init__(
        self, pipe, choice: DeviceChoice, name: str = "", card: ModelCard | None = None
    ) -> None:
        self.pipe = pipe
        self.device, self.dtype, self.name = choice.device, choice.dtype, name
        self.card = card or ModelCard()  # what clp2p knows of the model beyond its configs
        self.adapters: tuple[Adapter, ...] = ()  # the LoRAs and embeddings loaded into it
        self.tokenizer = pipe.tokenizer
        self.text = TextEncoders(pipe, self.device, self.dtype)
        self.max_tokens = self.text.max_tokens
        vae_io.keep_vae_precise(pipe, self.dtype, self.text.xl)
        self.vae_scale = 2 ** (len(pipe.vae.config.block_out_channels) - 1)
        ucfg = pipe.unet.config
        self.size_multiple = self.vae_scale * 2 ** (len(ucfg.down_block_types) - 1)
        self.native_size = int(ucfg.sample_size) * self.vae_scale
        self.self_layers = self_layer_numbers(pipe.unet.attn_processors)

    @classmethod
    def load(
        cls,
        model: str,
        device: str | None = None,
        dtype: str | None = None,
        *,
        allow_download: bool = False,
        prediction_type: str | None = None,
        adapters: tuple[Adapter, ...] = (),
    ) -> Engine:
        choice = choose_device(device, dtype)
        kw = {"allow_download": allow_download, "prediction_type": prediction_type}
        pipe = load_pipeline(model, choice, adapters=adapters, **kw)
        engine = cls(pipe, choice, model, model_card(model))
        engine.adapters = adapters
        return engine

    # ---- inputs ---------------------------------------------------------------------------
    def tokens(self, prompt: str) -> PromptTokens:
        tokens = tokenize(prompt, self.tokenizer, self.max_tokens, self.text.expand)
        return self.text.check_words(tokens)

    def resolve_settings(self, settings: RenderSettings) -> RenderSettings:
        """``settings`` at this model's size (see :meth:`RenderSettings.at_size`), once the
        negative prompt is known to fit the tokenizer."""
        self.tokens(settings.negative)  # the empty prompt fits
        return settings.at_size(self.native_size, self.size_multiple)

    def check_memory(self, height: int, width: int, branches: int = 1, batch: bool = False):
        """Refuse a render that would not fit in the device's free memory, before it allocates."""
        kw = {"tokens": self.max_tokens, "branches": branches, "per_pass": branches if batch else 1}
        kw["grid"] = self.card.attention_grid
        fits_memory(self.pipe, self.device, self.dtype, (height, width), **kw)

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
            edit = resolve_edit(origin, prompts[i], b.edit)
            out.append(replace(b, edit=check_layers(edit, len(self.self_layers))))
        return out, prompts, src

    def _inputs(
        self,
        branches: list[Branch],
        settings: RenderSettings,
        source: BranchRecord | None,
        inversion: Inversion | None,
        batch: bool,
    ) -> _Inputs:
        """Stage 1: resolve settings and branches; check the source, inversion and memory."""
        settings = self.resolve_settings(settings)
        branches, prompts, src_tokens = self.resolve(
            branches, source.prompt if source is not None else None
        )
        if source is not None and len(source.latents) != settings.steps:
            raise Clp2pError("the recorded source was rendered with other settings")
        latent_hw = (settings.height // self.vae_scale, settings.width // self.vae_scale)
        self.check_memory(settings.height, settings.width, len(branches), batch)
        if inversion is not None:
            inversion.check(settings)
            if tuple(inversion.latents.shape[2:]) != latent_hw:
                raise Clp2pError(
                    "the picture was inverted at another size: keep the session's size (or "
                    "import the picture again)"
                )
        return _Inputs(tuple(branches), tuple(prompts), src_tokens, settings, latent_hw)

    # ---- rendering ------------------------------------------------------------------------
    def encode(self, prompts: list[str]) -> Embeds:
        """Text embeddings of ``prompts`` (tokens (n, T, D), and SDXL's pooled ones), as
        diffusers' pipeline for the model computes them (see :mod:`clp2p.engine.text`)."""
        return self.text.encode(prompts, self.max_tokens)

    def unet_output(self, z: torch.Tensor, t, embeds: Embeds) -> torch.Tensor:
        """The UNet's output for latents ``z`` (b, C, h, w) at ``t`` given ``embeds`` (b rows)."""
        size = (z.shape[-2] * self.vae_scale, z.shape[-1] * self.vae_scale)
        added = self.text.added_conditions(embeds, size)
        return self.pipe.unet(
            z, t, encoder_hidden_states=embeds.tokens, added_cond_kwargs=added
        ).sample

    def encode_image(self, image: np.ndarray) -> torch.Tensor:
        """The latent (1, C, h, w) of an RGB uint8 image (H, W, 3), as the UNet expects it."""
        self.check_memory(*np.shape(image)[:2])  # an inversion starts here
        return vae_io.image_latent(self.pipe.vae, image, self.device).to(self.dtype)

    def scheduler(self, name: str = "ddim", karras: bool = False):
        """A fresh scheduler ``name`` with the model's scheduler config (timesteps not set)."""
        return make_scheduler(self.pipe.scheduler.config, name, karras)

    def decode(self, latents: torch.Tensor) -> list[np.ndarray]:
        """Latents (B, C, h, w) to RGB uint8 images (H, W, 3)."""
        return vae_io.latent_images(self.pipe.vae, self.pipe.image_processor, latents)

    def render(
        self,
        branches: list[Branch],
        settings: RenderSettings,
        *,
        options: RenderOptions = RenderOptions(),
        recording: Recording | None = None,
        inversion: Inversion | None = None,
        on_step: Callable[[StepInfo], None] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> RenderResult:
        """Render ``branches`` (branch 0 the root, each other an edit of an earlier branch)
        with ``options``. Every branch starts from the same noise (seed); each edit follows
        its source under its injection parameters. ``recording``: the recorded branch that
        branch 0 edits and which records ``result.records`` keeps (see :class:`Recording`).
        ``inversion``: start from an inverted image (see :mod:`clp2p.engine.inversion`), its
        root branch 0 unless a recorded source is given. ``cancel`` is checked before every
        step and before decoding: it raises :class:`RenderCancelled`. The UNet's attention
        processors are restored in every case."""
        start = time.perf_counter()
        recording = recording or Recording()
        batch = options.batch_branches
        inputs = self._inputs(branches, settings, recording.source, inversion, batch)
        controller = self._controller(inputs, options.heatmaps, recording)
        with torch.inference_mode():
            latents = self._denoise(inputs, controller, options, inversion, on_step, cancel)
            if cancel is not None and cancel():
                raise RenderCancelled("cancelled before decoding")
            decoded = vae_io.decode_branches(self.pipe.vae, self.decode, latents, controller)
            images = controller.finish(*decoded)  # as shown (local blend's pixels)
        return RenderResult(
            branches=inputs.branches,
            settings=inputs.settings,
            images=tuple(images),
            attention=controller.heatmaps.result(inputs.prompts),
            latents=latents.float().cpu().numpy(),
            seconds=time.perf_counter() - start,
            records=controller.records,
        )

    def _controller(
        self, inputs: _Inputs, heatmaps: HeatmapOptions, recording: Recording
    ) -> AttentionController:
        """Stage 2: the edit plans, attention statistics and branch records, in one controller."""
        n, steps = len(inputs.branches), inputs.settings.steps
        grids = attention_grids(self.pipe.unet.config, inputs.latent_hw)
        used = max(p.length for p in inputs.prompts)
        blend = blend_grid(grids, inputs.latent_hw, self.card.attention_grid)
        stats = AttentionRecorder(n, used, grids, blend, heatmaps, self.device)
        plans = build_plans(
            inputs.branches, inputs.prompts, inputs.recorded, steps, self.max_tokens, self.device
        )
        prompts = tuple(b.prompt for b in inputs.branches)
        picture = vae_io.decode_bytes(self.pipe.vae, inputs.latent_hw, self.vae_scale)
        return AttentionController(
            plans,
            n,
            steps,
            inputs.settings.guidance > 1.0,
            stats,
            inputs.latent_hw,
            source=recording.source,
            records=BranchRecorder(prompts, used, steps, recording.keep, recording.spec, picture),
            layer_numbers=self.self_layers,
        )

    def _denoise(
        self,
        inputs: _Inputs,
        controller: AttentionController,
        options: RenderOptions,
        inversion: Inversion | None,
        on_step: Callable[[StepInfo], None] | None,
        cancel: Callable[[], bool] | None,
    ) -> torch.Tensor:
        """Stage 3: the sampling loop with ``controller`` in every attention layer. Returns
        the final latents (branches, C, h, w)."""
        settings, n = inputs.settings, len(inputs.branches)
        # one prompt at a time: an embedding must not depend on the other prompts
        cond = Embeds.cat([self.encode([b.prompt]) for b in inputs.branches])  # n rows
        uncond = self._uncond(inversion, settings.negative) if settings.guidance > 1.0 else None
        scheduler = self.scheduler(settings.scheduler, settings.karras)
        scheduler.set_timesteps(settings.steps, device=self.device)
        latents = self._initial_latents(inputs, scheduler, inversion)
        # direct inversion: the root stays on the inversion trajectory (unless it is recorded)
        anchor = inversion is not None and inversion.method == "direct" and inputs.recorded is None
        groups = [list(range(n))] if options.batch_branches else [[b] for b in range(n)]
        with controlled_attention(self.pipe.unet, controller):
            loop_start = time.perf_counter()
            for i, t in enumerate(scheduler.timesteps):
                if cancel is not None and cancel():
                    raise RenderCancelled(f"cancelled before step {i + 1} of {settings.steps}")
                controller.begin_step(i)
                u = None if uncond is None else uncond[min(i, len(uncond) - 1)]
                eps = []
                for group in groups:
                    controller.begin_pass(group)
                    eps.append(
                        self._predict(latents[group], t, cond.rows(group), u, scheduler, settings)
                    )
                out = scheduler.step(torch.cat(eps), t, latents, **step_options(settings.scheduler))
                prev = out.prev_sample
                if anchor:
                    prev = prev.clone()
                    prev[0] = torch.tensor(inversion.latents[i + 1]).to(prev)
                latents = controller.end_step(prev)
                if on_step is not None:
                    estimate = getattr(out, "pred_original_sample", None)
                    estimate = prev if estimate is None else estimate  # DPM-Solver has none
                    on_step(self._progress(i, settings.steps, loop_start, estimate, options))
        return latents

    def _initial_latents(self, inputs: _Inputs, scheduler, inversion: Inversion | None):
        """(branches, C, h, w): the seed's noise, or the start of the inversion, shared by
        every branch."""
        if inversion is None:
            channels = self.pipe.unet.config.in_channels
            generator = torch.Generator("cpu").manual_seed(inputs.settings.seed)
            shape = (1, channels, *inputs.latent_hw)
            init = torch.randn(shape, generator=generator, dtype=self.dtype)
            init = init.to(self.device) * scheduler.init_noise_sigma
        else:
            init = torch.tensor(inversion.latents[:1]).to(self.device, self.dtype)
        return init.expand(len(inputs.branches), -1, -1, -1)

    def _progress(
        self, i: int, steps: int, loop_start: float, estimate: torch.Tensor, options: RenderOptions
    ) -> StepInfo:
        """Progress after step ``i`` (0-based); estimate: (branches, C, h, w) the clean-latent
        estimate, decoded on the steps a preview is due."""
        elapsed = time.perf_counter() - loop_start
        every = options.preview_every
        preview = None
        if every and ((i + 1) % every == 0 or i + 1 == steps):
            preview = np.stack(self.decode(estimate))
        return StepInfo(i + 1, steps, elapsed, elapsed / (i + 1) * (steps - i - 1), preview)

    def unconditional(self) -> Embeds:
        """The unconditional embedding of guidance (see :meth:`TextEncoders.unconditional`)."""
        return self.text.unconditional(self.max_tokens)

    def _uncond(self, inversion: Inversion | None, negative: str = "") -> list[Embeds]:
        """Unconditional embeddings, one per step or one for all: the model's unconditional
        one, or the ``negative`` prompt's; null-text's optimised token embeddings per step
        (with the model's unconditional pooled embedding, on SDXL); the source prompt's for
        negative-prompt inversion (which takes no negative prompt)."""
        if inversion is not None and inversion.uncond is not None:
            base = self.unconditional()
            tokens = torch.tensor(inversion.uncond).to(self.device, self.dtype)
            return [base.with_tokens(u[None]) for u in tokens]
        if inversion is not None and inversion.method == "negative-prompt":
            return [self.encode([inversion.prompt])]
        return [self.encode([negative]) if negative else self.unconditional()]

    def _predict(self, latents, t, cond: Embeds, uncond, scheduler, settings) -> torch.Tensor:
        """The guided noise prediction of ``latents`` (b, C, h, w) with embeddings ``cond``
        (b rows) and ``uncond`` (one row) or None without guidance."""
        b = latents.shape[0]
        if uncond is None:
            model_in = scheduler.scale_model_input(latents, t)
            return self.unet_output(model_in, t, cond)
        model_in = scheduler.scale_model_input(torch.cat([latents, latents]), t)  # (2b, ...)
        embeds = Embeds.cat([uncond.expand(b), cond])  # 2b rows
        eps_u, eps_c = self.unet_output(model_in, t, embeds).chunk(2)
        return eps_u + settings.guidance * (eps_c - eps_u)

    # ---- conveniences ---------------------------------------------------------------------
    def generate(self, prompt: str, settings: RenderSettings, **kwargs) -> RenderResult:
        """One prompt, no edits: ``render([Branch(prompt)], settings, **kwargs)``."""
        return self.render([Branch(prompt)], settings, **kwargs)

    def edit(
        self, source: str, targets: list[tuple[str, EditParams]], settings: RenderSettings, **kw
    ) -> RenderResult:
        """One source and one or more targets (prompt, :class:`EditParams`) edited from it,
        rendered together."""
        branches = [Branch(source)] + [Branch(p, 0, e) for p, e in targets]
        return self.render(branches, settings, **kw)
