"""The session tree: operations, JSON files, chained rendering with reuse, reversal metrics."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from clp2p.engine.engine import RenderOptions
from clp2p.errors import Clp2pError
from clp2p.model.params import StepWindow
from clp2p.model.presets import preset
from clp2p.model.session import Session, chain_key, image_hash
from clp2p.model.settings import RenderSettings
from clp2p.workflows import session_io
from clp2p.workflows.record_cache import RecordCache
from clp2p.workflows.session_render import SessionRenderer, apply

SETTINGS = RenderSettings(seed=2, steps=4, guidance=7.5, width=32, height=32)
A = "a red circle on a white background"
B = "a blue circle on a white background"
C = "a blue square on a white background"
D = "a blue big square on a white background"


def _chain() -> tuple[Session, list[str]]:
    s = Session.new(A, SETTINGS, "tiny")
    s, n2 = s.add_edit("n1", B, preset("p2p").with_(v_window=StepWindow(0, 0.5), v_blend=0.5))
    s, n3 = s.add_edit(n2, C, preset("cl-p2p"))
    s, n4 = s.add_edit(n3, D, preset("p2p").with_(inject_uncond=True))
    return s, ["n1", n2, n3, n4]


def test_tree_operations_are_immutable_and_complete():
    s, ids = _chain()
    assert [n.kind for n in s.nodes] == ["root", "swap", "swap", "refine"]
    s2, branch = s.add_edit("n2", "a green circle on a white background", preset("cl-p2p"))
    assert [c.id for c in s2.children("n2")] == ["n3", branch]
    assert len(s.nodes) == 4  # the old session is unchanged
    s3 = s2.update("n3", name="square", note="try a triangle too", favourite=True)
    assert s3.node("n3").favourite and s3.node("n3").name == "square"
    s4 = s3.delete("n3")
    assert [n.id for n in s4.nodes] == ["n1", "n2", branch]
    with pytest.raises(Clp2pError, match="root cannot be deleted"):
        s4.delete("n1")
    s5, rev = s.add_cycle("n2")
    node = s5.node(rev)
    assert node.kind == "cycle" and node.reverses == "n1" and node.prompt == A
    assert node.params.kind == "swap" and node.params.v_blend == 0.5
    with pytest.raises(Clp2pError, match="not an ancestor"):
        s.add_cycle("n2", "n4")
    s6, rw = s.add_edit("n1", "", preset("cl-p2p").with_(reweight=(("red", 2.0),)), kind="reweight")
    assert s6.node(rw).prompt == A and s6.node(rw).params.kind == "reweight"
    assert [b.source for b in s.branches("n4")] == [None, 0, 1, 2]


def test_json_round_trip_and_atomic_save(tmp_path):
    s, _ = _chain()
    s = s.update("n2", name="blue", metrics={"mae": 1.5})
    path = tmp_path / "s.json"
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    image[2:5, 2:5] = 200
    key = image_hash(image)
    s = s.update("n1", status="rendered", image=key)
    session_io.save(s, path, {key: image})
    loaded, images = session_io.load(path)
    assert loaded.nodes == s.nodes and loaded.settings == s.settings
    assert np.array_equal(images[key], image)
    session_io.save(s, tmp_path / "e.json", {key: image}, embed=True)
    _, embedded = session_io.load(tmp_path / "e.json")
    assert np.array_equal(embedded[key], image)
    assert not list(tmp_path.glob(".*"))  # no temporary files left behind


@pytest.mark.parametrize(
    "mutate, where",
    [
        (lambda d: d["nodes"][1].update(parent="n9"), "$.nodes[1].parent"),
        (lambda d: d["nodes"][1].update(parent="n3"), "$.nodes[1].parent"),
        (lambda d: d["nodes"][2].update(kind="morph"), "$.nodes[2].kind"),
        (lambda d: d["nodes"][1]["params"].update(k="high"), "$.nodes[1].params.k"),
        (lambda d: d["nodes"][1]["params"].update(self="0.9:0.1"), "$.nodes[1].params"),
        (lambda d: d["settings"].update(steps=10**40), "$.settings.steps"),
        (lambda d: d.update(schema_version=99), "newer clp2p"),
        (lambda d: d["nodes"].append(dict(d["nodes"][1])), "used twice"),
    ],
)
def test_loader_names_the_first_bad_field(tmp_path, mutate, where):
    s, _ = _chain()
    data = session_io.to_json(s)
    mutate(data)
    path = tmp_path / "bad.json"
    text = json.dumps(data)
    path.write_text(text)
    with pytest.raises(Clp2pError, match=where.replace("$", r"\$").replace("[", r"\[")):
        session_io.load(path)
    assert path.read_text() == text


def test_migration_hook_upgrades_older_files(monkeypatch):
    s, _ = _chain()
    data = session_io.to_json(s)
    data["schema_version"] = 0
    data["nodes"][0]["title"] = data["nodes"][0].pop("name")

    def v0_to_v1(doc):
        for node in doc["nodes"]:
            node["name"] = node.pop("title", "")
        return {**doc, "schema_version": 1}

    monkeypatch.setitem(session_io.MIGRATIONS, 0, v0_to_v1)
    # an edit from before version 4 keeps the refinement padding it was rendered with
    shifted = tuple(
        n if n.params is None else replace(n, params=n.params.with_(refine_pad="shifted"))
        for n in s.nodes
    )
    assert session_io.from_json(data).nodes == shifted


def test_chain_rendered_node_by_node_with_the_cache_equals_one_go(tiny_engine):
    s, ids = _chain()
    cold = SessionRenderer(tiny_engine).render(s, ids[-1], use_cache=False)
    assert cold.computed == 4
    renderer = SessionRenderer(tiny_engine)
    for node_id in ids:
        r = renderer.render(s, node_id)
        s = apply(s, r)
        # the root alone, then only the new child, except that n4 also edits the
        # unconditional half, which records do not keep: it renders from n2's record
        assert r.computed == (2 if node_id == "n4" else 1)
    # one UNet pass per branch: the same bits however the chain was split
    assert np.array_equal(r.latents, cold.latents) and np.array_equal(r.image, cold.image)
    assert s.node(ids[-1]).image == cold.hash
    assert len(renderer.cache) == 4 and renderer.cache.hits == 3


def test_batched_branches_match_one_pass_per_branch(tiny_engine):
    s, ids = _chain()
    apart = SessionRenderer(tiny_engine).render(s, ids[-1], use_cache=False)
    batched = RenderOptions(batch_branches=True)
    together = SessionRenderer(tiny_engine).render(s, ids[-1], use_cache=False, options=batched)
    np.testing.assert_allclose(together.latents, apart.latents, atol=1e-4)
    assert np.abs(together.image.astype(int) - apart.image.astype(int)).max() <= 1


def test_cache_evicts_under_a_tiny_budget_and_recomputes(tiny_engine):
    s, ids = _chain()
    renderer = SessionRenderer(tiny_engine)
    renderer.render(s, "n2")
    one = renderer.cache.nbytes // 2
    small = SessionRenderer(tiny_engine, budget=int(one * 1.5))  # room for one record
    first = small.render(s, "n2")
    assert len(small.cache) == 1 and small.cache.evictions == 0
    again = small.render(s, "n3")  # n2's record is kept: only n3 is computed
    assert again.computed == 1
    assert len(small.cache) == 1 and small.cache.evictions == 1  # n3's record replaced n2's
    small.cache.clear()
    recomputed = small.render(s, "n3")
    assert recomputed.computed == 3 and recomputed.hash == again.hash
    assert first.hash == renderer.render(s, "n2", use_cache=False).hash
    # a smaller budget evicts the least recently used records at once
    renderer.render(s, "n3")
    assert len(renderer.cache) == 3  # n1, n2, n3
    renderer.cache.resize(int(one * 1.5))
    assert len(renderer.cache) == 1 and renderer.cache.nbytes <= renderer.cache.budget
    chain = [s.node(i) for i in ids[:3]]
    assert chain_key(s, chain) in renderer.cache  # the most recently used record stayed


def test_cycle_reversal_measures_its_distance(tiny_engine):
    s, _ = _chain()
    s, rev = s.add_cycle("n2")
    r = SessionRenderer(tiny_engine).render(s, rev)
    assert set(r.metrics) == {"mae", "psnr", "ssim"}
    ancestor = SessionRenderer(tiny_engine).render(s, "n1").image
    expected = np.abs(r.image.astype(float) - ancestor.astype(float)).mean()
    assert r.metrics["mae"] == pytest.approx(expected, abs=1e-3)


def test_export_load_render_gives_equal_hashes(tiny_engine, tmp_path):
    s, ids = _chain()
    renderer = SessionRenderer(tiny_engine)
    images = {}
    for node_id in ids:
        r = renderer.render(s, node_id)
        s = apply(s, r)
        images[r.hash] = r.image
    session_io.save(s, tmp_path / "s.json", images)
    loaded, _ = session_io.load(tmp_path / "s.json")
    fresh = SessionRenderer(tiny_engine)
    for node_id in ids:
        assert fresh.render(loaded, node_id).hash == loaded.node(node_id).image


def test_records_that_would_not_fit_are_not_kept(tiny_engine):
    s, ids = _chain()
    full = SessionRenderer(tiny_engine)
    full.render(s, "n3", use_cache=True)
    per_record = full.cache.nbytes // 3
    tight = SessionRenderer(tiny_engine, budget=int(per_record * 1.5))
    tight.render(s, "n3")
    assert len(tight.cache) == 1  # only the deepest branch, n3, was recorded
    s, n5 = s.add_edit("n3", "a green square on a white background", preset("cl-p2p"))
    assert tight.render(s, n5).computed == 1
    none = SessionRenderer(tiny_engine, budget=per_record // 2)
    none.render(s, "n2")
    assert len(none.cache) == 0


def test_record_cache_chooses_the_deepest_records_that_fit():
    cache = RecordCache(budget=100)
    assert cache.choose({0: 40, 1: 40, 2: 40}) == {1, 2}  # the end of the chain first
    assert cache.choose({0: 40, 1: 101, 2: 50}) == {0, 2}  # one too large is skipped
    assert cache.choose({}) == set()
    assert RecordCache(budget=39).choose({0: 40, 1: 40}) == set()  # smaller than one record
    cache.resize(120)
    assert cache.choose({0: 40, 1: 40, 2: 40}) == {0, 1, 2}


def test_identical_reversals_read_as_infinite_psnr():
    from clp2p.model.session import describe_metrics

    exact = {"mae": 0.0, "psnr": None, "ssim": 1.0}
    assert describe_metrics(exact) == "mae=0.0 psnr=inf ssim=1.0"
    assert describe_metrics({"mae": 2.5, "psnr": 31.2}) == "mae=2.5 psnr=31.2"
