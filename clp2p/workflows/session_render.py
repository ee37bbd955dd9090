"""Rendering session nodes with reuse: each rendered branch's :class:`BranchRecord` is kept in
a least-recently-used cache under a memory budget (:mod:`clp2p.workflows.record_cache`),
optionally spilling to disk beside the session file (:mod:`clp2p.workflows.record_spill`), so
rendering a child of a rendered node computes only the child. A record no longer kept is
recomputed transparently from the root."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clp2p.attention.maps import AttentionMaps
from clp2p.attention.records import BranchRecord, Recording
from clp2p.engine.engine import Engine, RenderOptions, StepInfo
from clp2p.engine.fingerprint import engine_identity, weights_of
from clp2p.model.params import RECORDED, Branch, EditParams
from clp2p.model.reuse import RecordSpec
from clp2p.model.session import Session, chain_key, image_hash, weights_tag
from clp2p.workflows.metrics import reversal_metrics
from clp2p.workflows.record_cache import DEFAULT_BUDGET, RecordCache
from clp2p.workflows.record_spill import RecordSpill


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
    note: str = ""  # why a cached record could not serve it, when one could not
    weights: str = ""  # the weights that rendered it (:func:`weights_tag`)


class SessionRenderer:
    """Renders nodes of sessions with one engine and a record cache."""

    def __init__(
        self, engine: Engine, budget: int = DEFAULT_BUDGET, max_self_res: int | None = None
    ) -> None:
        self.engine = engine
        self.cache = RecordCache(budget)
        self.max_self_res = max_self_res  # the largest self-attention grid records keep
        # edits the records must also serve beyond the session's own: a sweep's whole grid
        self.serves: tuple[EditParams, ...] = ()

    def spill_to(self, folder: Path | None, limit: int) -> None:
        """Spill records evicted from memory to ``folder``, keeping at most ``limit`` bytes
        there (see :func:`~clp2p.workflows.record_spill.records_folder`); None or a limit of
        0: no spill. The first spill reads every weight once, for the engine's identity."""
        spill = self.cache.spill
        if folder is None or limit <= 0:
            self.cache.spill = None
        elif spill is not None and spill.folder == folder:
            spill.limit = limit
        else:
            self.cache.spill = RecordSpill(folder, limit, engine_identity(self.engine))

    @property
    def weights(self) -> str:
        """The tag (:func:`weights_tag`) of the engine's weights: read once per engine."""
        return weights_tag(weights_of(self.engine))

    @staticmethod
    def record_key(session: Session, chain: list, options: RenderOptions) -> str:
        """The key of the record of ``chain``'s last branch: its :func:`chain_key`, and
        whether its render batched the branches. A batched render's bits differ by float
        rounding, so its records never serve a render of one branch per pass, nor the other
        way round."""
        key = chain_key(session, chain)
        if options.batch_branches:
            return hashlib.sha256(f"batched\n{key}".encode()).hexdigest()
        return key

    def spec(self, session: Session) -> RecordSpec:
        """What records of ``session``'s branches keep: what its edits and :attr:`serves`
        need (the default edit's needs while there are none), self-attention capped at
        ``max_self_res``."""
        edits = [n.params for n in session.nodes if n.params is not None] + list(self.serves)
        return RecordSpec.serving(edits or [EditParams()], self.max_self_res)

    def render(
        self,
        session: Session,
        node_id: str,
        images: dict[str, np.ndarray] | None = None,
        *,
        use_cache: bool = True,
        options: RenderOptions | None = None,
        on_step: Callable[[StepInfo], None] | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> NodeRender:
        """Render ``node_id`` as its chain from the root, starting after the deepest ancestor
        whose record is cached, with ``options``. Changes nothing in ``session``: the caller
        stores the result (see :func:`apply`)."""
        options = options or RenderOptions()
        chain = session.path(node_id)
        start, source, note = 0, None, ""
        if use_cache:
            start, source, note = self._cached_start(session, chain, options)
        branches = _branches(chain[start:], source is not None)
        result = self.engine.render(
            branches,
            session.settings,
            options=options,
            # the cache's budget chooses which branches are recorded, after the first step
            recording=Recording(source, self.cache if use_cache else None, self.spec(session)),
            inversion=session.imported.inversion if session.imported else None,
            on_step=on_step,
            cancel=cancel,
        )
        self._keep(session, chain, start, result.records, options)
        computed = {n.id: result.images[i] for i, n in enumerate(chain[start:])}
        image = result.images[-1]
        node = chain[-1]
        metrics: dict = {}
        if node.kind == "cycle":
            ancestor = computed.get(node.reverses)
            if ancestor is None:  # the same progress and cancel reach this render
                ancestor = self._ancestor(
                    session, node.reverses, images, use_cache, options, on_step, cancel
                )
            metrics = reversal_metrics(image, ancestor, self.engine.card.metrics)
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
            note=note,
            weights=self.weights,
        )

    def _keep(
        self, session: Session, chain: list, start: int, records: dict, options: RenderOptions
    ) -> None:
        """Put the records of a render of ``chain`` from ``start`` (by branch: branch i is
        node ``start + i``) in the cache, the deepest last: the most recently used, the last
        to leave memory, since its children are what is rendered next."""
        for i in sorted(records):
            key = self.record_key(session, chain[: start + i + 1], options)
            self.cache.put(key, records[i])

    def _ancestor(
        self,
        session: Session,
        node_id: str,
        images: dict[str, np.ndarray] | None,
        use_cache: bool,
        options: RenderOptions,
        on_step: Callable[[StepInfo], None] | None,
        cancel: Callable[[], bool] | None,
    ) -> np.ndarray:
        """The image of ``node_id``: the stored one in ``images``, else rendered."""
        stored = session.node(node_id).image
        ancestor = (images or {}).get(stored) if stored else None
        if ancestor is None:
            render = self.render(
                session,
                node_id,
                images,
                use_cache=use_cache,
                options=options,
                on_step=on_step,
                cancel=cancel,
            )
            ancestor = render.image
        return ancestor

    def _cached_start(
        self, session: Session, chain: list, options: RenderOptions
    ) -> tuple[int, BranchRecord | None, str]:
        """Where the render of ``chain`` starts: after its deepest ancestor whose record is
        cached and holds what the next edit needs (its index in the chain + 1, and the
        record), else at the root (0, None); and, when a deeper cached record could not serve,
        why."""
        steps, note = session.settings.steps, ""
        for j in range(len(chain) - 2, -1, -1):
            params = chain[j + 1].params
            if params.inject_uncond:  # records keep only the conditional half
                continue
            source = self.cache.get(self.record_key(session, chain[: j + 1], options))
            if source is None:
                continue
            lacks = source.spec.lacks(params, steps)
            if not lacks and params.blend_pixels and source.image is None:
                lacks = "its picture"
            if not lacks and params.blend_norm and source.norms is None:
                lacks = "its decoder statistics"
            if not lacks:
                return j + 1, source, f"rendered from {chain[j].id}: {note}" if note else ""
            note = note or f"the cached record of {chain[j].id} lacks {lacks}"
        return 0, None, f"rendered from the root: {note}" if note else ""


def _branches(chain: list, recorded: bool) -> list[Branch]:
    """The render batch of ``chain``: each node edited from the one before; the first from
    the record of its parent when ``recorded``, else rendered from its prompt."""
    branches = []
    for i, node in enumerate(chain):
        if i == 0 and not recorded:
            branches.append(Branch(node.prompt))
        else:
            branches.append(Branch(node.prompt, RECORDED if i == 0 else i - 1, node.params))
    return branches


def apply(session: Session, render: NodeRender) -> Session:
    """The session with ``render`` stored on its node (status, image hash, time, metrics,
    the weights that rendered it)."""
    return session.update(
        render.node_id,
        status="rendered",
        image=render.hash,
        seconds=round(render.seconds, 3),
        metrics=render.metrics,
        weights=render.weights,
    )
