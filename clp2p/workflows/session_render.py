"""Rendering session nodes with reuse: each rendered branch's :class:`BranchRecord` is kept in
a least-recently-used cache under a memory budget, so rendering a child of a rendered node
computes only the child. An evicted record is recomputed transparently from the root."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from clp2p.attention.control import RECORDED, BranchRecord
from clp2p.attention.maps import AttentionMaps
from clp2p.engine.engine import Engine, StepInfo
from clp2p.model.params import Branch
from clp2p.model.session import Session, chain_key, image_hash

DEFAULT_BUDGET = 2 * 1024**3


class RecordCache:
    """Branch records by chain key, least recently used evicted first past ``budget`` bytes."""

    def __init__(self, budget: int = DEFAULT_BUDGET) -> None:
        self.budget = budget
        self._items: OrderedDict[str, BranchRecord] = OrderedDict()
        self.nbytes = 0
        self.hits = self.misses = self.evictions = 0

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: str) -> bool:
        return key in self._items

    def get(self, key: str) -> BranchRecord | None:
        record = self._items.get(key)
        if record is None:
            self.misses += 1
            return None
        self._items.move_to_end(key)
        self.hits += 1
        return record

    def put(self, key: str, record: BranchRecord) -> None:
        size = record.nbytes
        if key in self._items:
            self.nbytes -= self._items.pop(key).nbytes
        if size > self.budget:
            return  # larger than the whole budget: not kept
        self._evict_until(self.budget - size)
        self._items[key] = record
        self.nbytes += size

    def clear(self) -> None:
        self._items.clear()
        self.nbytes = 0

    def resize(self, budget: int) -> None:
        """A new budget; the least recently used records go until the rest fits."""
        self.budget = budget
        self._evict_until(budget)

    def _evict_until(self, limit: int) -> None:
        """Drop the least recently used records until at most ``limit`` bytes are held."""
        while self._items and self.nbytes > limit:
            _, old = self._items.popitem(last=False)
            self.nbytes -= old.nbytes
            self.evictions += 1


@dataclass(frozen=True)
class NodeRender:
    """The result of rendering one node: its image (H, W, 3) uint8, content hash, time,
    metrics, attention data (branch 0 of ``attention`` may be an ancestor) and how many
    branches were computed."""

    node_id: str
    image: np.ndarray
    hash: str
    seconds: float
    metrics: dict
    attention: AttentionMaps
    branch: int  # index of the node in ``attention``
    computed: int
    images: dict[str, np.ndarray]  # node id -> image for every computed node of the chain
    latents: np.ndarray  # (C, h, w) float32, the node's final latent


def reversal_metrics(image: np.ndarray, ancestor: np.ndarray, shapes: bool) -> dict:
    """Distance of a cycle reversal to the ancestor it reverses: mean absolute difference
    (0-255), PSNR (dB; None when the images are identical), SSIM, and on the shapes model the
    foreground mask IoU."""
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    a, b = image.astype(np.float64), ancestor.astype(np.float64)
    mae = float(np.abs(a - b).mean())
    psnr = float(peak_signal_noise_ratio(ancestor, image, data_range=255)) if mae > 0 else None
    side = min(image.shape[:2])
    win = min(7, side if side % 2 else side - 1)
    ssim = float(
        structural_similarity(ancestor, image, channel_axis=2, data_range=255, win_size=win)
    )
    metrics = {"mae": round(mae, 4), "psnr": psnr and round(psnr, 3), "ssim": round(ssim, 5)}
    if shapes:
        from clp2p.shapes.metrics import foreground_mask, mask_iou

        metrics["mask_iou"] = round(mask_iou(foreground_mask(image), foreground_mask(ancestor)), 5)
    return metrics


class SessionRenderer:
    """Renders nodes of sessions with one engine and a record cache."""

    def __init__(self, engine: Engine, budget: int = DEFAULT_BUDGET) -> None:
        self.engine = engine
        self.cache = RecordCache(budget)

    def render(
        self,
        session: Session,
        node_id: str,
        images: dict[str, np.ndarray] | None = None,
        *,
        use_cache: bool = True,
        on_step: Callable[[StepInfo], None] | None = None,
        cancel: Callable[[], bool] | None = None,
        preview_every: int = 0,
    ) -> NodeRender:
        """Render ``node_id`` as its chain from the root, starting after the deepest ancestor
        whose record is cached. Changes nothing in ``session``: the caller stores the result
        (see :func:`apply`)."""
        chain = session.path(node_id)
        start, source = 0, None
        if use_cache:
            for j in range(len(chain) - 2, -1, -1):
                if chain[j + 1].params.inject_uncond:
                    continue  # records keep only the conditional half
                source = self.cache.get(chain_key(session, chain[: j + 1]))
                if source is not None:
                    start = j + 1
                    break
        branches = []
        for i, node in enumerate(chain[start:]):
            if i == 0 and source is None:
                branches.append(Branch(node.prompt))
            else:
                branches.append(Branch(node.prompt, RECORDED if i == 0 else i - 1, node.params))
        result = self.engine.render(
            branches,
            session.settings,
            source=source,
            record=use_cache,
            record_limit=self.cache.budget,
            inversion=session.imported.inversion if session.imported else None,
            on_step=on_step,
            cancel=cancel,
            preview_every=preview_every,
        )
        for i, record in result.records.items():
            self.cache.put(chain_key(session, chain[: start + i + 1]), record)
        computed = {n.id: result.images[i] for i, n in enumerate(chain[start:])}
        image = result.images[-1]
        node = chain[-1]
        metrics: dict = {}
        if node.kind == "cycle":
            ancestor = computed.get(node.reverses)
            if ancestor is None:
                stored = session.node(node.reverses).image
                ancestor = (images or {}).get(stored) if stored else None
            if ancestor is None:
                ancestor = self.render(session, node.reverses, images, use_cache=use_cache).image
            metrics = reversal_metrics(image, ancestor, session.model == "shapes")
        return NodeRender(
            node_id=node_id,
            image=image,
            hash=image_hash(image),
            seconds=result.seconds,
            metrics=metrics,
            attention=result.attention,
            branch=len(branches) - 1,
            computed=len(branches),
            images=computed,
            latents=result.latents[-1],
        )


def apply(session: Session, render: NodeRender) -> Session:
    """The session with ``render`` stored on its node (status, image hash, time, metrics)."""
    return session.update(
        render.node_id,
        status="rendered",
        image=render.hash,
        seconds=round(render.seconds, 3),
        metrics=render.metrics,
    )
