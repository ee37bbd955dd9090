"""Compact records: a branch's record keeps what the session's edits need, a child served
from it renders the same bits as cold, and a child needing more is rendered from further up
its chain, saying why."""

from __future__ import annotations

import numpy as np

from clp2p.model.params import CrossWindow, EditParams, StepWindow
from clp2p.model.presets import preset
from clp2p.model.reuse import FULL, RecordSpec
from clp2p.model.session import Session
from clp2p.model.settings import RenderSettings
from clp2p.workflows.session_render import SessionRenderer, apply

# 64 px on the tiny model: self-attention grids of 8x8 (64 pixels) and 4x4 (16 pixels)
SETTINGS = RenderSettings(seed=3, steps=5, guidance=7.5, width=64, height=64)
A = "a red circle on a white background"
B = "a blue circle on a white background"
C = "a blue square on a white background"
D = "a green square on a white background"
SMALL = preset("cl-p2p").with_(self_res=4)  # self injection on the 4x4 grid only


def _session(params=SMALL) -> Session:
    s = Session.new(A, SETTINGS, "tiny")
    s, _ = s.add_edit("n1", B, params)
    s, _ = s.add_edit("n2", C, params)
    return s


def test_a_spec_serves_exactly_the_edits_it_was_made_for():
    spec = RecordSpec.serving([SMALL])
    assert spec.lacks(SMALL, 50) == ""
    assert spec.self_pixels == 16 and spec.cross_probs == StepWindow(0, 0.2)
    assert spec.self_v is None and spec.cross_v is None
    wider = SMALL.with_(self_res=None)
    assert "self-attention at every grid" in spec.lacks(wider, 50)
    longer = SMALL.with_(cross=CrossWindow(StepWindow(0, 0.2), (("blue", StepWindow(0, 0.6)),)))
    assert "cross-attention maps in steps 0.6" in spec.lacks(longer, 50)
    v = SMALL.with_(v_blend=0.5, v_window=StepWindow(0, 0.5), v_layers="both")
    assert "values (V injection)" in spec.lacks(v, 50)
    assert FULL.lacks(v.with_(self_res=None), 50) == ""
    # windows that round to the same steps are served: 0.19 and 0.2 of 5 steps are step 0
    assert spec.lacks(SMALL.with_(cross=CrossWindow(StepWindow(0, 0.3))), 5) == ""
    # the ceiling caps the grids a spec keeps
    capped = RecordSpec.serving([wider], max_self_res=4)
    assert capped.self_pixels == 16 and capped.lacks(wider, 50)


def test_compact_records_are_smaller_and_render_the_same_bits(tiny_engine):
    s = _session()
    cold = SessionRenderer(tiny_engine).render(s, "n3", use_cache=False)
    compact = SessionRenderer(tiny_engine)
    for node_id in ("n1", "n2", "n3"):
        r = compact.render(s, node_id)
        assert r.computed == 1 and r.note == ""
        s = apply(s, r)
    assert np.array_equal(r.latents, cold.latents) and r.hash == cold.hash
    # the same chain with edits that need everything keeps full records
    full_session = _session(SMALL.with_(self_res=None, self_window=StepWindow(0, 1)))
    full = SessionRenderer(tiny_engine)
    full.render(full_session, "n2")
    compact_bytes = compact.cache.nbytes / len(compact.cache)
    full_bytes = full.cache.nbytes / len(full.cache)
    assert compact_bytes < 0.5 * full_bytes


def test_a_child_needing_more_than_the_record_renders_from_further_up(tiny_engine):
    s = _session()
    renderer = SessionRenderer(tiny_engine)
    for node_id in ("n1", "n2", "n3"):
        s = apply(s, renderer.render(s, node_id))
    # the session's spec grows with this edit, but the records made before lack its needs
    s, n4 = s.add_edit("n3", D, SMALL.with_(self_res=None))
    r = renderer.render(s, n4)
    # n3 is computed again from n2's record (which serves n3's own edit), and n4 with it
    assert r.computed == 2
    assert r.note.startswith("rendered from n2: the cached record of n3 lacks")
    assert "self-attention at every grid" in r.note
    cold = SessionRenderer(tiny_engine).render(s, n4, use_cache=False)
    assert r.hash == cold.hash
    # its chain's records now hold what it needs: a sibling with the same needs is one branch
    s, n5 = s.add_edit("n3", "a yellow square on a white background", EditParams(self_res=None))
    again = renderer.render(s, n5)
    assert again.computed == 1 and again.note == ""


def test_the_default_budget_follows_the_host_memory(monkeypatch):
    from clp2p.engine import loading
    from clp2p.workflows.record_cache import default_budget

    monkeypatch.setattr(loading, "available_memory", lambda device: 40 * 2**30)
    assert default_budget() == 20 * 2**30  # half of what the system can give
    monkeypatch.setattr(loading, "available_memory", lambda device: 2**29)
    assert default_budget() == 2**30  # never under 1 GiB
