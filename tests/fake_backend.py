"""A scriptable stand-in for clp2p.workflows.service.EngineService (both satisfy
clp2p_studio.backend.Backend): no model, controllable timing, failures and step counts,
deterministic images, and the engine's own edit checks on a tokenizer of one token a word."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable

import numpy as np

from clp2p.attention.maps import AttentionMaps
from clp2p.engine.engine import StepInfo
from clp2p.errors import Clp2pError, RenderCancelled
from clp2p.model.align import word_tokens
from clp2p.model.edits import resolve_edit
from clp2p.model.params import EditParams
from clp2p.model.session import Session, image_hash
from clp2p.model.sweep import Item
from clp2p.workflows.service import ImportJob, ModelInfo, ModelSpec, RenderJob, SweepJob
from clp2p.workflows.session_render import NodeRender


def fake_image(prompt: str, size: int = 64) -> np.ndarray:
    seed = int(hashlib.sha256(prompt.encode()).hexdigest()[:8], 16)
    rng = np.random.default_rng(seed)
    image = np.zeros((size, size, 3), dtype=np.uint8)
    image[:] = rng.integers(0, 256, 3)
    image[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = rng.integers(0, 256, 3)
    return image


def fake_attention(prompts: list[str], steps: int = 4) -> AttentionMaps:
    toks = [word_tokens(p) for p in prompts]
    t = max(x.length for x in toks)
    rng = np.random.default_rng(0)
    cross = {(8, 8): rng.random((steps, len(prompts), 8, 8, t), dtype=np.float32)}
    comps = rng.random((len(prompts), 3, 8, 8), dtype=np.float32)
    return AttentionMaps(tuple(toks), cross, (8, 8), (8, 8), comps, np.ones((len(prompts), 3)))


class FakeBackend:
    def __init__(self, steps: int = 5, delay: float = 0.0) -> None:
        self.steps, self.delay = steps, delay
        self.fail_with: str | None = None
        self.crash_with: Exception | None = None
        self.calls: list[str] = []
        self.gate: threading.Event | None = None  # when set, a render waits for it at step 1
        self.note = ""  # why a render did not start from its parent's record
        self.item_error: Callable[[Item], str | None] | None = None  # a sweep item's failure
        self.weights = "0123456789abcdef"  # the loaded weights' tag

    def load(self, spec: ModelSpec) -> ModelInfo:
        self.calls.append(f"load {spec.model}")
        if spec.model == "missing":
            raise Clp2pError("model 'missing' not found: give a folder")
        return ModelInfo(spec, "cpu", "float32", 64, 16, 16, weights=self.weights)

    def render(
        self,
        job: RenderJob,
        on_step: Callable[[StepInfo], None] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> NodeRender:
        self.calls.append(f"render {job.node_id}")
        chain = job.session.path(job.node_id)
        for i in range(self.steps):
            if cancel is not None and cancel():
                raise RenderCancelled(f"cancelled before step {i + 1}")
            if self.gate is not None and i == 1:
                self.gate.wait(5)
            time.sleep(self.delay)
            if on_step is not None:
                preview = fake_image(f"{chain[-1].prompt}{i}")[None]
                on_step(StepInfo(i + 1, self.steps, 0.01 * (i + 1), 0.01, preview))
        if self.crash_with is not None:
            raise self.crash_with
        if self.fail_with is not None:
            raise Clp2pError(self.fail_with)
        images = {n.id: fake_image(n.prompt) for n in chain}
        image = images[job.node_id]
        metrics = {"mae": 1.0, "psnr": 30.0, "ssim": 0.9} if chain[-1].kind == "cycle" else {}
        return NodeRender(
            node_id=job.node_id,
            image=image,
            hash=image_hash(image),
            seconds=0.05,
            metrics=metrics,
            attention=fake_attention([n.prompt for n in chain]),
            branch=len(chain) - 1,
            computed=len(chain),
            images=images,
            latents=np.zeros((4, 8, 8), dtype=np.float32),
            note=self.note,
            weights=self.weights,
        )

    def import_image(
        self,
        job: ImportJob,
        on_step: Callable[[StepInfo], None] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> tuple[Session, dict[str, np.ndarray]]:
        """Steps like a render, then a session whose root is the picture itself."""
        from clp2p.model.imported import ImportedImage, Inversion, fit_image

        self.calls.append(f"import {job.file}")
        for i in range(self.steps):
            if cancel is not None and cancel():
                raise RenderCancelled(f"cancelled at {i} of {self.steps}")
            if self.gate is not None and i == 1:
                self.gate.wait(5)
            if on_step is not None:
                on_step(StepInfo(i + 1, self.steps, 0.01 * (i + 1), 0.01))
        picture = fit_image(job.image, 64, 64, job.fit)
        latents = np.zeros((job.settings.steps + 1, 4, 8, 8), np.float32)
        inversion = Inversion(job.method, job.prompt, latents)
        imported = ImportedImage(inversion, image_hash(picture), job.fit, job.file)
        session = Session.from_image(imported, job.settings, "fake")
        key = image_hash(picture)
        session = session.update("n1", status="rendered", image=key)
        return session, {key: picture}

    def sweep(
        self,
        job: SweepJob,
        on_item: Callable[[dict, int, int], None] | None = None,
        cancel: Callable[[], bool] | None = None,
    ):
        """The real results folder (:func:`~clp2p.workflows.sweep.run_items`) over fake
        renders: one a task, in order; ``gate`` holds the second item, ``fail_with`` fails the
        whole sweep and ``item_error`` single items."""
        from clp2p.workflows.sweep import run_items

        self.calls.append(f"sweep {len(job.items)}" + (f" on Ray {job.ray}" if job.ray else ""))
        if self.fail_with is not None:
            raise Clp2pError(self.fail_with)
        pool = _FakePool(self)
        return run_items(
            list(job.items), job.folder, pool, job.asked, on_item=on_item, cancel=cancel
        )

    def sweep_outcome(self, item: Item) -> dict:
        """What a worker returns for ``item``: the source as :meth:`render` makes it, a result
        that depends on the edit's parameters, the item's session with both rendered."""
        error = self.item_error(item) if self.item_error is not None else None
        if error:
            return {"error": error, "seconds": 0.01}
        session, edit = item.session, item.session.node(item.node_id)
        source = fake_image(session.node(item.parent).prompt)
        result = fake_image(f"{edit.prompt} {json.dumps(edit.params.to_json())}")
        images = {image_hash(source): source, image_hash(result): result}
        for node in session.nodes:
            if node.id not in (item.parent, item.node_id):
                session = session.update(node.id, status="new", image=None)
        session = session.update(item.parent, status="rendered", image=image_hash(source))
        session = session.update(item.node_id, status="rendered", image=image_hash(result))
        k = edit.params.k
        return {
            "session": session,
            "node_id": item.node_id,
            "source": source,
            "result": result,
            "images": images,
            "computed": 1,
            "scores": {"success": k < 0.5, "iou": round(1 - k / 2, 3)},
            "seconds": 0.01,
        }

    def check_edit(self, source: str, target: str, params: EditParams) -> str | None:
        try:
            resolve_edit(word_tokens(source), word_tokens(target), params)
        except Clp2pError as exc:
            return str(exc)
        return None


class _FakePool:
    """A pool for :func:`~clp2p.workflows.sweep.run_items` whose worker is the fake."""

    def __init__(self, backend: FakeBackend) -> None:
        self.backend = backend

    def run(self, tasks, work, on_done, cancel=None) -> None:
        for i, task in enumerate(tasks):
            if self.backend.gate is not None and i == 1:
                self.backend.gate.wait(5)
            if cancel is not None and cancel():  # between items, as the engine's pools do
                raise RenderCancelled("cancelled")
            time.sleep(self.backend.delay)
            outcome = self.backend.sweep_outcome(task.payload[0])
            on_done(task, outcome | {"worker": "fake"})


async def until(condition, timeout: float = 10.0):
    """Wait on the event loop until ``condition()`` holds."""
    import asyncio

    waited = 0.0
    while not condition():
        await asyncio.sleep(0.02)
        waited += 0.02
        if waited > timeout:
            raise TimeoutError("condition not reached")
