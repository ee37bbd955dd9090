"""The session tree: a conversation of edits as plain, immutable data (no torch, no Qt).

A session has one root (a prompt and the sampling settings). Every other node is an edit of
its parent: word swap, refinement, re-weight, or a cycle reversal (an edit back to an
ancestor's prompt). A node's image is its branch in the chain from the root: the root renders
from its prompt and seed, each child's source is its parent's branch with the parent's own
injections, so a node deep in the tree reproduces what the user saw at every step.

Every operation returns a new :class:`Session`; the old one is unchanged (undo keeps them).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

import numpy as np

from clp2p.errors import Clp2pError
from clp2p.model import limits
from clp2p.model.adapters import Adapter
from clp2p.model.edits import infer_kind
from clp2p.model.imported import ImportedImage
from clp2p.model.params import RESOLVED_KINDS, Branch, EditParams
from clp2p.model.settings import RenderSettings

SCHEMA_VERSION = 8
NODE_KINDS = ("root", *RESOLVED_KINDS, "cycle")
STATUSES = ("new", "rendered")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def image_hash(image: np.ndarray) -> str:
    """Content hash of an RGB uint8 image (H, W, 3): its size and pixels."""
    h = hashlib.sha256(f"{image.shape[0]}x{image.shape[1]}:".encode())
    h.update(np.ascontiguousarray(image, dtype=np.uint8).tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Node:
    """One image of the conversation. ``params`` is None for the root; ``reverses`` names the
    ancestor a cycle reversal edits back to. ``image`` is a content hash (see
    :func:`image_hash`); ``metrics`` holds e.g. a reversal's distance to its ancestor."""

    id: str
    parent: str | None
    kind: str
    prompt: str
    params: EditParams | None = None
    reverses: str | None = None
    name: str = ""
    note: str = ""
    favourite: bool = False
    status: str = "new"
    image: str | None = None
    seconds: float | None = None
    metrics: dict = field(default_factory=dict)
    created: str = field(default_factory=now)
    # the weights its image was rendered with (see :func:`weights_tag`); "" when unknown
    weights: str = ""

    def __post_init__(self) -> None:
        if self.weights and not re.match(limits.WEIGHTS_PATTERN, self.weights):
            raise Clp2pError(
                f"weights '{self.weights[:40]}': a node's weights are "
                f"{limits.WEIGHTS_CHARS} lowercase hex digits (or none)"
            )
        limits.text("prompt", self.prompt, limits.MAX_PROMPT_CHARS)
        limits.text("name", self.name, limits.MAX_NAME_CHARS)
        limits.text("note", self.note, limits.MAX_NOTE_CHARS)
        if self.seconds is not None:
            limits.finite("seconds", self.seconds)


@dataclass(frozen=True)
class Session:
    """A tree of :class:`Node` (insertion order: parents before children) and the root's
    sampling settings and model. ``imported``: the root is an inverted picture (its image is
    the inversion's reconstruction) instead of a generation from the seed."""

    settings: RenderSettings
    model: str
    nodes: tuple[Node, ...]
    created: str = field(default_factory=now)
    device: str = ""
    dtype: str = ""
    imported: ImportedImage | None = None
    adapters: tuple[Adapter, ...] = ()  # the LoRAs and embeddings the model is loaded with
    # the highest node number this session has given out: a deleted node's id is never given
    # to a new node (its renders, previews and maps stay its own)
    issued: int = 1

    def __post_init__(self) -> None:
        highest = max((_number(n.id) for n in self.nodes), default=1)
        if self.issued < highest:
            object.__setattr__(self, "issued", highest)

    # ---- queries ------------------------------------------------------------------------
    @property
    def root(self) -> Node:
        return self.nodes[0]

    def node(self, node_id: str) -> Node:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise Clp2pError(f"node '{node_id}' is not in this session")

    def children(self, node_id: str) -> list[Node]:
        return [n for n in self.nodes if n.parent == node_id]

    def path(self, node_id: str) -> list[Node]:
        """Nodes from the root to ``node_id``."""
        chain = [self.node(node_id)]
        while chain[-1].parent is not None:
            chain.append(self.node(chain[-1].parent))
        return chain[::-1]

    def branches(self, node_id: str) -> list[Branch]:
        """The render batch of ``node_id``: its chain from the root, each edited from the
        previous."""
        chain = self.path(node_id)
        out = [Branch(chain[0].prompt)]
        for i, n in enumerate(chain[1:], start=1):
            out.append(Branch(n.prompt, i - 1, n.params))
        return out

    def subtree(self, node_id: str) -> list[str]:
        ids = [node_id]
        for n in self.nodes:
            if n.parent in ids:
                ids.append(n.id)
        return ids

    # ---- changes (each returns a new session) -------------------------------------------
    @classmethod
    def new(
        cls, prompt: str, settings: RenderSettings, model: str, adapters: tuple[Adapter, ...] = ()
    ) -> Session:
        if not prompt.strip():
            raise Clp2pError("the root needs a prompt")
        root = Node("n1", None, "root", prompt)
        return cls(settings=settings, model=model, nodes=(root,), adapters=adapters)

    @classmethod
    def from_image(
        cls, imported: ImportedImage, settings: RenderSettings, model: str, name: str = ""
    ) -> Session:
        """A session whose root is an imported picture, inverted under its prompt."""
        prompt = imported.inversion.prompt
        if imported.inversion.steps != settings.steps:
            raise Clp2pError("the inversion's steps differ from the session's: invert again")
        root = Node("n1", None, "root", prompt, name=name)
        return cls(settings=settings, model=model, nodes=(root,), imported=imported)

    def _next_id(self) -> str:
        number = self.issued + 1
        node_id = f"n{number}"
        if not re.match(limits.NODE_ID_PATTERN, node_id):
            raise Clp2pError(
                f"this session has used node ids up to n{number - 1}: start a new session "
                "from a node of it (export the branch you need)"
            )
        return node_id

    def add_edit(self, parent: str, prompt: str, params: EditParams, kind: str | None = None):
        """A child of ``parent`` editing its image toward ``prompt``. ``kind`` is swap, refine
        or reweight; by default ``params.kind``, and for ``auto`` as the engine decides it."""
        source = self.node(parent).prompt
        if not prompt.strip():
            if kind != "reweight" and params.kind != "reweight":
                raise Clp2pError("an edit needs a target prompt")
            prompt = source
        kind = kind or infer_kind(source, prompt, params)
        if kind not in RESOLVED_KINDS:
            raise Clp2pError.about(
                "{kind} '{value}': an edit is {kinds}", value=kind, kinds=", ".join(RESOLVED_KINDS)
            )
        node = Node(self._next_id(), parent, kind, prompt, params.with_(kind=kind))
        return self._added(node), node.id

    def add_cycle(
        self, node_id: str, ancestor: str | None = None, params: EditParams | None = None
    ):
        """A reversal of ``node_id``: an edit of it back to ``ancestor``'s prompt (default: its
        parent), with the reversed edit's injection parameters unless ``params`` is given."""
        node = self.node(node_id)
        if node.parent is None:
            raise Clp2pError("the root has nothing to reverse: pick an edit node")
        target = ancestor or node.parent
        if target not in [n.id for n in self.path(node_id)[:-1]]:
            raise Clp2pError(f"node '{target}' is not an ancestor of '{node_id}'")
        base = (params or node.params or EditParams()).with_(
            kind="auto", reweight=(), blend_words=()
        )
        prompt = self.node(target).prompt
        params = base.with_(kind=infer_kind(node.prompt, prompt, base))
        child = Node(self._next_id(), node_id, "cycle", prompt, params, reverses=target)
        return self._added(child), child.id

    def _added(self, node: Node) -> Session:
        return replace(self, nodes=self.nodes + (node,), issued=_number(node.id))

    def issuing_from(self, issued: int) -> Session:
        """The session giving out node numbers after ``issued`` (at least): e.g. after an undo
        took back a node, the next node still gets a fresh id."""
        return self if issued <= self.issued else replace(self, issued=issued)

    def with_settings(self, settings: RenderSettings) -> Session:
        """The session with new root sampling settings. An imported picture's inversion holds
        only for its steps and size (and, for null-text, its guidance): those stay."""
        if self.imported is not None:
            old = self.settings
            settings = replace(  # no size given: the picture's
                settings, width=settings.width or old.width, height=settings.height or old.height
            )
            if (settings.width, settings.height) != (old.width, old.height):
                raise Clp2pError(
                    "the picture was inverted at this size: keep it (or import it again)"
                )
            self.imported.inversion.check(settings)
        return replace(self, settings=settings)

    def delete(self, node_id: str) -> Session:
        if self.node(node_id).parent is None:
            raise Clp2pError("the root cannot be deleted: start a new session instead")
        gone = set(self.subtree(node_id))
        return replace(self, nodes=tuple(n for n in self.nodes if n.id not in gone))

    def update(self, node_id: str, **changes) -> Session:
        """Rename, annotate, mark favourite, or store a render result on one node."""
        allowed = {"name", "note", "favourite", "status", "image", "seconds", "metrics", "weights"}
        if not set(changes) <= allowed:
            raise Clp2pError(f"cannot change {sorted(set(changes) - allowed)} of a node")
        self.node(node_id)
        nodes = tuple(replace(n, **changes) if n.id == node_id else n for n in self.nodes)
        return replace(self, nodes=nodes)


def weights_tag(fingerprint: str) -> str:
    """What a node keeps of the fingerprint of the weights that rendered it
    (:func:`clp2p.engine.fingerprint.weights_fingerprint`): its first
    :data:`~clp2p.model.limits.WEIGHTS_CHARS` hex digits."""
    return fingerprint[: limits.WEIGHTS_CHARS]


def rendered_by_other(node: Node, tag: str) -> bool:
    """Whether ``node``'s picture was made with other weights than ``tag``'s; a node
    rendered before weights were kept (none stored) is not: unknown. No tag: never."""
    return bool(tag) and node.status == "rendered" and node.weights not in ("", tag)


def other_weights(session: Session, tag: str) -> list[str]:
    """The nodes of ``session`` whose pictures :func:`rendered_by_other` weights."""
    return [n.id for n in session.nodes if rendered_by_other(n, tag)]


def other_weights_message(session: Session, tag: str) -> str:
    """One line for people when :func:`other_weights` is not empty, else ""."""
    ids = other_weights(session, tag)
    if not ids:
        return ""
    made = sorted({session.node(i).weights for i in ids})
    shown = ", ".join(ids[:8]) + (f" and {len(ids) - 8} more" if len(ids) > 8 else "")
    return (
        f"{shown}: rendered with other weights of '{session.model}' ({', '.join(made)}; "
        f"loaded: {tag}); they re-render with new pixels, and their pictures so far stay "
        "until you re-render them"
    )


def _number(node_id: str) -> int:
    """The number of an id ``n<number>``; 0 for an id of another form."""
    return int(node_id[1:]) if node_id[:1] == "n" and node_id[1:].isdigit() else 0


def chain_key(session: Session, chain: list[Node]) -> str:
    """Identifies what a branch's image depends on: model, settings, the imported picture's
    inversion, and every prompt and parameter on its chain from the root."""
    s = session.settings
    doc = {
        "model": session.model,
        "settings": [s.seed, s.steps, s.guidance, s.width, s.height],
        # a changed negative prompt or sampler changes every image: keys made before they
        # existed (ddim, no negative prompt) stay what they were
        **({"negative": s.negative} if s.negative else {}),
        **({"sampler": s.sampler} if s.sampler != "ddim" else {}),
        "chain": [[n.prompt, n.params.to_json() if n.params else None] for n in chain],
    }
    if session.imported is not None:
        doc["inversion"] = session.imported.inversion.data_hash
    if session.adapters:
        doc["adapters"] = [[a.kind, a.sha256, a.scale, a.token] for a in session.adapters]
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def describe_metrics(metrics: dict) -> str:
    """``mae=0.0 psnr=inf ssim=1.0``: a node's metrics for people; a PSNR stored as None (the
    images are identical) reads as infinite."""
    parts = []
    for key, value in metrics.items():
        shown = "inf" if key == "psnr" and value is None else value
        parts.append(f"{key}={shown}")
    return " ".join(parts)
