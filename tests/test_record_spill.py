"""Records spilled to disk beside the session: they round-trip bit for bit, serve later renders
(also in a new process) with the pixels of a cold render, are deleted least recently used
first past their limit, are never read when damaged or made by another engine or mode, and
leave the session file and its folder checks as they were."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
import torch

from clp2p.attention.records import BranchRecord
from clp2p.cli.main import main
from clp2p.engine.engine import Engine, RenderOptions
from clp2p.engine.fingerprint import engine_identity, weights_fingerprint
from clp2p.engine.loading import choose_device
from clp2p.model.params import StepWindow
from clp2p.model.presets import preset
from clp2p.model.reuse import RecordSpec
from clp2p.model.session import Session
from clp2p.model.settings import RenderSettings
from clp2p.workflows import record_spill, session_io
from clp2p.workflows.record_cache import RecordCache
from clp2p.workflows.record_spill import RecordSpill, records_folder
from clp2p.workflows.service import EngineService, ModelSpec, RenderJob
from clp2p.workflows.session_render import SessionRenderer, apply

SETTINGS = RenderSettings(seed=3, steps=3, guidance=7.5, width=32, height=32)
A = "a red circle on a white background"
B = "a blue circle on a white background"
C = "a blue square on a white background"
D = "a green circle on a white background"


def _session() -> Session:
    """n1 -> n2 -> n3, and n4, another child of n1."""
    s = Session.new(A, SETTINGS, "tiny")
    s, _ = s.add_edit("n1", B, preset("p2p"))
    s, _ = s.add_edit("n2", C, preset("cl-p2p"))
    s, _ = s.add_edit("n1", D, preset("p2p"))
    return s


def _record(nbytes: int = 4096, prompt: str = "p", seed: int = 0) -> BranchRecord:
    """A hand-made record of about ``nbytes``: odd dtypes, empty slots, a narrow spec."""
    g = torch.Generator().manual_seed(seed)
    n = nbytes // 4 // 4
    q = torch.randn((1, 2, n // 2), generator=g)
    spec = RecordSpec(StepWindow(0.1, 0.6), 64, None, StepWindow(0, 0.5), None)
    return BranchRecord(
        prompt=prompt,
        tokens=5,
        self_qkv={(0, "down.attn1"): (q, q.half(), None)},
        cross={(0, "down.attn2"): (torch.rand((1, 2, n // 2), generator=g), None)},
        latents=[torch.randn((4, 2, 2), generator=g).to(torch.bfloat16)],
        blend_sum=[torch.rand((4, n // 2), generator=g)],
        spec=spec,
    )


def _tensors(r: BranchRecord) -> list:
    """Every slot of a record, in a fixed order (None where nothing was kept)."""
    slots = [t for k in sorted(r.self_qkv) for t in r.self_qkv[k]]
    slots += [t for k in sorted(r.cross) for t in r.cross[k]]
    norms = [t for pair in r.norms or () for t in pair]
    return slots + r.latents + r.blend_sum + [r.image] + norms


def _same(a: BranchRecord, b: BranchRecord) -> bool:
    def equal(x, y) -> bool:
        if x is None or y is None:
            return x is y
        return x.dtype == y.dtype and torch.equal(x, y)

    ta, tb = _tensors(a), _tensors(b)
    return (
        (a.prompt, a.tokens, a.spec, sorted(a.self_qkv), sorted(a.cross))
        == (b.prompt, b.tokens, b.spec, sorted(b.self_qkv), sorted(b.cross))
        and len(ta) == len(tb)
        and all(equal(x, y) for x, y in zip(ta, tb, strict=True))
    )


def test_a_record_round_trips_through_disk(tiny_engine, tmp_path):
    renderer = SessionRenderer(tiny_engine)
    s = _session()
    renderer.render(s, "n2")
    n2 = renderer.record_key(s, s.path("n2"), RenderOptions())
    rendered = renderer.cache.get(n2)
    spill = RecordSpill(tmp_path / "r", 2**30, "engine")
    assert rendered.image is not None and rendered.image.dtype == torch.uint8
    assert rendered.norms and all(m.dtype == torch.float32 for m, _ in rendered.norms)
    for key, record in ((n2, rendered), ("hand-made", _record())):
        assert spill.put(key, record)
        back = spill.get(key)
        assert back is not None and _same(back, record)
    assert spill.get("never written") is None
    names = [p.name for p in (tmp_path / "r").iterdir()]
    assert len(names) == 2 and all(record_spill._NAME.fullmatch(n) for n in names)


def test_a_child_of_a_spilled_parent_renders_like_a_cold_render(tiny_engine, tmp_path):
    s = _session()
    full = SessionRenderer(tiny_engine)
    full.render(s, "n2")
    one = full.cache.nbytes // 2
    folder = records_folder(tmp_path / "trip.clp2p.json")
    assert folder.name == "trip.clp2p.json.records"

    renderer = SessionRenderer(tiny_engine, budget=int(one * 1.5))  # room for one record
    renderer.spill_to(folder, 10 * one)
    s = apply(s, renderer.render(s, "n2"))  # n1's record goes to disk, n2's stays
    cache = renderer.cache
    assert (len(cache), cache.spilled, cache.evictions) == (1, 1, 1)
    assert cache.nbytes <= cache.budget and 0 < cache.spilled_bytes <= 10 * one
    sibling = renderer.render(s, "n4")  # from n1's record, read back into memory
    assert sibling.computed == 1 and cache.spill_hits == 1
    assert cache.spilled == 2  # n2's record went to disk; n1's file was kept
    child = renderer.render(s, "n3")  # from n2's record, read back from disk
    assert child.computed == 1 and cache.spill_hits == 2
    assert cache.spill.writes == 3  # n1's, n2's and n4's: n1's was not written again

    for node_id, warm in (("n3", child), ("n4", sibling)):
        cold = SessionRenderer(tiny_engine).render(s, node_id, use_cache=False)
        assert warm.hash == cold.hash and cold.computed == 3 - (node_id == "n4")

    later = SessionRenderer(tiny_engine, budget=int(one * 1.5))  # e.g. the next day
    later.spill_to(folder, 10 * one)
    again = later.render(s, "n3")
    assert again.computed == 1 and again.hash == child.hash


def test_records_larger_than_the_memory_budget_go_straight_to_disk(tiny_engine, tmp_path):
    s = _session()
    renderer = SessionRenderer(tiny_engine, budget=0)
    renderer.spill_to(tmp_path / "r", 2**30)
    renderer.render(s, "n2")
    assert len(renderer.cache) == 0 and renderer.cache.spilled == 2  # both were recorded
    assert renderer.render(s, "n3").computed == 1


def test_least_recently_used_files_go_past_the_limit(tmp_path):
    records = {k: _record(8192, k, seed=i) for i, k in enumerate("abc")}
    probe = RecordSpill(tmp_path / "probe", 2**30)
    probe.put("a", records["a"])
    size = probe.nbytes  # one file
    spill = RecordSpill(tmp_path / "r", int(size * 2.5))
    spill.put("a", records["a"])
    spill.put("b", records["b"])
    assert spill.get("a") is not None  # a is now more recent than b
    spill.put("c", records["c"])
    assert "a" in spill and "b" not in spill and "c" in spill
    assert len(spill) == 2 and spill.nbytes <= spill.limit
    assert not spill.put("big", _record(size * 4))  # larger than the whole limit
    assert "big" not in spill and len(spill) == 2
    spill.limit = int(size * 1.5)
    spill.put("b", records["b"])  # room is made from the least recently used
    assert [k for k in "abc" if k in spill] == ["b"]


def test_a_stale_temporary_file_of_a_killed_write_is_deleted(tmp_path):
    spill = RecordSpill(tmp_path, 2**30)
    name = spill.path("a").name
    stale, fresh = tmp_path / f".{name}.x1.tmp", tmp_path / f".{name}.x2.tmp"
    stale.write_bytes(b"half")
    fresh.write_bytes(b"being written")
    old = 2 * record_spill.STALE_SECONDS * 10**9
    os.utime(stale, ns=(os.stat(stale).st_mtime_ns - old,) * 2)
    spill.put("a", _record())
    assert not stale.exists() and fresh.exists()


_CALLED: list[str] = []


def _ran(what: str) -> None:
    _CALLED.append(what)


class _Payload:
    def __reduce__(self):
        return (_ran, ("code from the file ran",))


def _wrong_version(path, spill, key):
    doc = record_spill._document(key, spill.identity, _record())
    doc["version"] = record_spill.VERSION + 1
    torch.save(doc, path)


def _other_key(path, spill, key):
    spill.put("other", _record(seed=5))
    os.replace(spill.path("other"), path)


def _link(path, spill, key):
    os.replace(path, path.with_name("elsewhere"))  # a whole record of this key, elsewhere
    path.symlink_to("elsewhere")


def _fifo(path, spill, key):
    path.unlink()
    os.mkfifo(path)


DAMAGE = {
    "truncated": lambda path, spill, key: path.write_bytes(path.read_bytes()[:1000]),
    "garbage": lambda path, spill, key: path.write_bytes(os.urandom(5000)),
    "empty": lambda path, spill, key: path.write_bytes(b""),
    "foreign": lambda path, spill, key: torch.save({"weights": torch.ones(3)}, path),
    "code": lambda path, spill, key: torch.save({"format": _Payload()}, path),
    "wrong version": _wrong_version,
    "another key": _other_key,
    "a link": _link,
    "a fifo": _fifo,  # the lookup does not wait on it
    "bad image": lambda path, spill, key: torch.save(
        {**record_spill._document(key, spill.identity, _record()), "image": torch.ones(2, 2)},
        path,
    ),
    "bad norms": lambda path, spill, key: torch.save(
        {**record_spill._document(key, spill.identity, _record()), "norms": [[torch.ones(2)]]},
        path,
    ),
    "bad window": lambda path, spill, key: torch.save(
        {**record_spill._document(key, spill.identity, _record()), "spec": {"self_qk": [0.9, 0.1]}},
        path,
    ),
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_file_is_a_miss_and_is_removed(tmp_path, damage):
    spill = RecordSpill(tmp_path, 2**30, "engine")
    spill.put("k", _record())
    path = spill.path("k")
    DAMAGE[damage](path, spill, "k")
    cache = RecordCache(0, spill)
    assert cache.get("k") is None and cache.misses == 1
    assert not os.path.lexists(path) and _CALLED == []


def test_a_folder_that_cannot_be_written_costs_the_records_only(tmp_path):
    (tmp_path / "r").write_text("a file where the folder would be")
    spill = RecordSpill(tmp_path / "r", 2**30)
    assert not spill.put("k", _record()) and spill.failures == 1
    assert spill.get("k") is None and len(spill) == 0


def test_another_engine_or_mode_never_reads_the_records(tiny_engine, tmp_path):
    s = _session()
    folder = tmp_path / "r"
    batched = RenderOptions(batch_branches=True)
    fast = SessionRenderer(tiny_engine, budget=0)  # every record to disk
    fast.spill_to(folder, 2**30)
    fast.render(s, "n2", options=batched)
    assert fast.cache.spilled == 2 and fast.render(s, "n3", options=batched).computed == 1
    # one branch per pass: the batched records (in memory or on disk) do not serve it
    assert fast.render(s, "n3").computed == 3
    mixed = SessionRenderer(tiny_engine)
    mixed.render(s, "n2", options=batched)
    assert mixed.render(s, "n3").computed == 3

    from tiny import tiny_pipeline

    other = Engine(tiny_pipeline(seed=1), choose_device("cpu", "fp32"), name="tiny")
    half = Engine(tiny_engine.pipe, choose_device("cpu", "bf16"), name="tiny")
    identities = {engine_identity(e) for e in (tiny_engine, other, half)}
    assert len(identities) == 3 and engine_identity(tiny_engine) in identities
    assert weights_fingerprint(tiny_engine.pipe) == weights_fingerprint(half.pipe)  # same weights
    spilled = len(list(folder.iterdir()))
    for engine in (other, half):
        renderer = SessionRenderer(engine, budget=0)
        renderer.spill_to(folder, 2**30)
        assert renderer.cache.get(renderer.record_key(s, s.path("n2"), batched)) is None
    assert len(list(folder.iterdir())) == spilled  # another engine's files are not damage


def test_the_cli_refuses_a_negative_spill_in_one_line(tmp_path, capsys):
    path = str(tmp_path / "s.json")
    assert main(["session", "new", path, "--prompt", A, "--steps", "2"]) == 0
    capsys.readouterr()
    assert main(["session", "render", path, "--spill-mib", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--spill-mib -1: give a size in MiB" in err


def test_a_session_beside_its_records_loads_saves_and_renders_again(tmp_path, capsys):
    path = tmp_path / "trip.clp2p.json"
    common = ["--steps", "2"]
    assert main(["session", "new", str(path), "--prompt", A, *common]) == 0
    assert main(["session", "add", str(path), "--parent", "n1", "--target", B]) == 0
    assert main(["session", "add", str(path), "--parent", "n2", "--target", C]) == 0
    args = ["session", "render", str(path), "--cache-mib", "0", "--spill-mib", "64"]
    capsys.readouterr()
    assert main(args) == 0
    out = capsys.readouterr().out
    folder = tmp_path / "trip.clp2p.json.records"
    files = list(folder.iterdir())
    assert files and all(record_spill._NAME.fullmatch(f.name) for f in files)
    assert "records: 0 in memory (0.00 GiB), 3 on disk" in out
    assert "records" not in json.dumps(json.loads(path.read_text()))
    session, images = session_io.load(path)
    assert all(n.image in images for n in session.nodes)
    session_io.save(session, path, images)
    assert {p.name for p in tmp_path.iterdir()} == {path.name, "trip.clp2p.images", folder.name}
    assert main(args) == 0  # every node from its parent's record on disk, the same pixels
    out = capsys.readouterr().out
    assert out.count(": same") == 3 and "DIFFERS" not in out


def test_the_studio_spills_beside_a_saved_session_only(tiny_engine, tmp_path):
    service = EngineService()
    service.engine, service.renderer = tiny_engine, SessionRenderer(tiny_engine, budget=0)
    spec = dataclasses.replace(ModelSpec(), spill_mib=64)
    service.info = dataclasses.replace(_info(), spec=spec)
    s = _session()
    service.render(RenderJob(s, "n2", {}))  # unsaved: no spill
    assert service.renderer.cache.spill is None
    saved = tmp_path / "trip.json"
    service.render(RenderJob(s, "n2", {}, session_file=str(saved)))
    assert service.renderer.cache.spilled == 2
    assert (tmp_path / "trip.json.records").is_dir()
    assert service.render(RenderJob(s, "n3", {}, session_file=str(saved))).computed == 1


def _info():
    from clp2p.workflows.service import ModelInfo

    return ModelInfo(ModelSpec(), "cpu", "float32", 32, 16, 77)


def test_the_dialog_and_the_settings_keep_the_spill(qtbot, tmp_path):
    from PySide6.QtCore import QSettings

    from clp2p_studio.model_dialog import ModelDialog
    from clp2p_studio.settings import StudioSettings

    settings = StudioSettings(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    assert settings.model_spec.spill_mib == ModelSpec.spill_mib
    dialog = ModelDialog(settings.model_spec)
    qtbot.addWidget(dialog)
    assert "NAME.records" in dialog.spill.toolTip()
    dialog.spill.setValue(2048)
    settings.model_spec = dialog.spec()
    assert settings.model_spec.spill_mib == 2048
    assert settings.model_spec.same_model(ModelSpec())  # changing it needs no reload
