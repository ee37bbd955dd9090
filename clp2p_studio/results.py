"""Render results of a session, the one home of what a render left behind: each node's image
(its content hash), time and metrics, and the attention maps to show for it.

Results are keyed by what a node's image depends on (:func:`clp2p.model.session.chain_key`),
never by node id: ids are reused after a delete or an undo, a chain key is not. Attention maps
are large, so only the most recently used few are kept; images, times and metrics are small
and kept for every result.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

from clp2p.attention.maps import AttentionMaps

ATTENTION_KEPT = 32  # renders' attention maps held at most (least recently used go first)


@dataclass(frozen=True)
class NodeResult:
    """What a render stored for one node: image hash, seconds and metrics (None and empty for
    a node computed on the way to another, which has no time or metrics of its own)."""

    image: str
    seconds: float | None = None
    metrics: dict = field(default_factory=dict)
    weights: str = ""  # the weights that rendered it (a tag; "" unknown)

    def node_fields(self) -> dict:
        """The node fields this result sets (see :meth:`clp2p.model.session.Session.update`)."""
        return {
            "status": "rendered",
            "image": self.image,
            "seconds": self.seconds,
            "metrics": dict(self.metrics),
            "weights": self.weights,
        }


class RenderResults:
    """Results by chain key, and the attention maps of the ``attention_kept`` most recently
    used of them: ``(maps, branch)``, the node's branch in ``maps``."""

    def __init__(self, attention_kept: int = ATTENTION_KEPT) -> None:
        self.attention_kept = attention_kept
        self._results: dict[str, NodeResult] = {}
        self._attention: OrderedDict[str, tuple[AttentionMaps, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._results)

    def __contains__(self, key: str) -> bool:
        return key in self._results

    def result(self, key: str) -> NodeResult | None:
        return self._results.get(key)

    def attention(self, key: str) -> tuple[AttentionMaps, int] | None:
        """The maps of the result under ``key`` and its branch, if still kept."""
        found = self._attention.get(key)
        if found is not None:
            self._attention.move_to_end(key)
        return found

    @property
    def attention_count(self) -> int:
        """How many results' attention maps are kept (at most ``attention_kept``)."""
        return len(self._attention)

    def store(
        self, key: str, result: NodeResult, attention: tuple[AttentionMaps, int] | None = None
    ) -> None:
        """Keep ``result`` under ``key``; ``attention`` replaces the maps kept for it (None
        forgets them: they belonged to an earlier image)."""
        self._results[key] = result
        self._attention.pop(key, None)
        if attention is not None and self.attention_kept > 0:
            self._attention[key] = attention
            while len(self._attention) > self.attention_kept:
                self._attention.popitem(last=False)
