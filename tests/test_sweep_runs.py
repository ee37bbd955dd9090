"""`clp2p sweep` and `clp2p batch` on the shipped shapes model, in this process: the results
folder a user opens, items that re-render to the same bits, re-runs that render only what is
missing or failed, and images that do not depend on what else a sweep holds."""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from clp2p.cli.main import main
from clp2p.model.session import image_hash
from clp2p.workflows import session_io
from clp2p.workflows import sweep as sweep_flow

SRC = "a red circle on a white background"
TGT = "a blue circle on a white background"
# one thread: two threads beside another torch process spin in OpenMP (see clp2p.cli.main)
RUN = ["--steps", "2", "--guidance", "4", "--threads", "1"]
GRID = ["--grid", "k=0,0.5", "--grid", "cross=0.2:0.6,0.8"]  # 4 items, cross fastest


def sweep_argv(out: Path, *extra: str, source: str = SRC, target: str = TGT) -> list[str]:
    return ["sweep", "--source", source, "--target", target, *RUN, *extra, "--out", str(out)]


def summary(capsys) -> tuple[int, int, int]:
    """(rendered, done before, failed) of the last run's closing line."""
    out = capsys.readouterr().out
    found = re.findall(r"(\d+) rendered, (\d+) done before, (\d+) failed", out)
    assert found, out
    return tuple(int(n) for n in found[-1])


def rows(folder: Path) -> list[dict]:
    with open(folder / "results.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def pixels(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def item_dir(folder: Path, row: dict) -> Path:
    return folder / "items" / row["key"][:16]


@pytest.fixture(autouse=True)
def torch_threads(monkeypatch):
    """``--threads`` sets this process's torch threads and the sweep its OpenMP wait policy:
    the next tests get theirs back."""
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def counted(monkeypatch):
    """The keys of the items rendered (``render_item`` calls); ``counted.stop = n`` makes the
    (n + 1)-th call a Ctrl-C."""

    class Calls(list):
        stop: int | None = None

    calls, real = Calls(), sweep_flow.render_item

    def render_item(worker, payload):
        if calls.stop is not None and len(calls) == calls.stop:
            raise KeyboardInterrupt
        calls.append(payload[0].key())
        return real(worker, payload)

    monkeypatch.setattr(sweep_flow, "render_item", render_item)
    return calls


@pytest.fixture(scope="module")
def swept(tmp_path_factory) -> Path:
    """A 2 x 2 sweep (k, then cross) of the red circle made blue."""
    out = tmp_path_factory.mktemp("sweep") / "out"
    assert main(sweep_argv(out, *GRID)) == 0
    return out


def test_a_sweep_writes_its_table_items_and_contact_sheet(swept):
    table = rows(swept)
    assert [(r["k"], r["cross"], r["seed"]) for r in table] == [
        ("0", "0.2:0.6", "0"),
        ("0", "0.8", "0"),
        ("0.5", "0.2:0.6", "0"),
        ("0.5", "0.8", "0"),
    ]
    header = list(table[0])
    assert header.index("cross") < header.index("source")  # the varied values come first
    assert {"status", "error", "success", "iou", "keep_mad"} <= set(header)
    assert all(r["status"] == "done" and r["error"] == "" for r in table)
    assert all(0.0 <= float(r["iou"]) <= 1.0 and r["success"] in ("True", "False") for r in table)
    assert len({r["key"] for r in table}) == 4
    assert {p.name for p in (swept / "items").iterdir()} == {r["key"][:16] for r in table}

    listed = json.loads((swept / "results.json").read_text())["items"]
    assert [r["key"] for r in listed] == [r["key"] for r in table]
    assert [r["params"]["k"] for r in listed] == [0.0, 0.0, 0.5, 0.5]
    assert [r["params"]["cross"] for r in listed] == ["0.2:0.6", "0.8"] * 2
    asked = json.loads((swept / "sweep.json").read_text())
    assert asked["format"] == "clp2p-sweep" and asked["kind"] == "sweep"
    assert asked["grid"] == {"k": ["0", "0.5"], "cross": ["0.2:0.6", "0.8"]}
    assert asked["target"] == TGT and asked["model"] == "shapes"

    with Image.open(swept / "contact-sheet.png") as sheet:
        w, h = sheet.size
        drawn = np.asarray(sheet.convert("RGB")).astype(int)
    assert 3 * 64 <= w <= 3 * 400 and 2 * 64 <= h <= 2 * 400  # a source + 2 results, 2 rows
    assert w > h
    coloured = (drawn.max(axis=2) - drawn.min(axis=2)) > 60  # the shapes, not text or paper
    assert coloured.sum() > 6 * 100


def test_each_item_holds_its_images_and_a_session_of_them(swept):
    for row in rows(swept):
        folder = item_dir(swept, row)
        item = json.loads((folder / "item.json").read_text())
        assert item["key"] == row["key"] and item["status"] == "done"
        session, images = session_io.load(folder / "session.json")
        root, edit = session.nodes[0], session.nodes[-1]
        assert [n.id for n in session.nodes] == ["n1", "n2"] and edit.params.k == float(row["k"])
        assert root.image == image_hash(pixels(folder / "source.png"))
        assert edit.image == image_hash(pixels(folder / "result.png"))
        assert np.array_equal(images[edit.image], pixels(folder / "result.png"))


@pytest.mark.parametrize("which", [0, 3])
def test_an_item_session_renders_to_the_same_bits(swept, tmp_path, capsys, which):
    row = rows(swept)[which]
    copy = tmp_path / "item"
    shutil.copytree(item_dir(swept, row), copy)
    capsys.readouterr()
    assert main(["session", "render", str(copy / "session.json"), "--no-cache"]) == 0
    out = capsys.readouterr().out
    result = image_hash(pixels(copy / "result.png"))
    assert f"n2: same {result[:12]}" in out and "n1: same" in out, out


def test_running_again_renders_only_what_is_missing(swept, tmp_path, capsys, counted):
    out = tmp_path / "out"
    shutil.copytree(swept, out)
    capsys.readouterr()
    assert main(sweep_argv(out, *GRID)) == 0
    assert summary(capsys) == (0, 4, 0) and counted == []
    assert rows(out) == rows(swept)

    gone = rows(out)[2]
    shutil.rmtree(item_dir(out, gone))
    assert main(sweep_argv(out, *GRID)) == 0
    assert summary(capsys) == (1, 3, 0) and counted == [gone["key"]]
    again = item_dir(out, gone) / "result.png"
    assert again.read_bytes() == (item_dir(swept, gone) / "result.png").read_bytes()
    assert [r["status"] for r in rows(out)] == ["done"] * 4


def test_an_interrupted_sweep_finishes_without_rendering_twice(tmp_path, capsys, counted):
    out = tmp_path / "out"
    counted.stop = 2
    with pytest.raises(KeyboardInterrupt):
        main(sweep_argv(out, *GRID))
    assert len(counted) == 2
    assert [r["status"] for r in rows(out)] == ["done", "done", "not rendered", "not rendered"]
    assert sorted(p.name for p in (out / "items").iterdir()) == sorted(k[:16] for k in counted)

    counted.stop = None
    capsys.readouterr()
    assert main(sweep_argv(out, *GRID)) == 0
    assert summary(capsys) == (2, 2, 0)
    keys = [r["key"] for r in rows(out)]
    assert sorted(counted) == sorted(keys)  # each item rendered once over the two runs
    assert [r["status"] for r in rows(out)] == ["done"] * 4


def manifest(folder: Path, *lines: dict) -> Path:
    path = folder / "batch.jsonl"
    text = "# a comment, then a blank line\n\n" + "".join(json.dumps(d) + "\n" for d in lines)
    path.write_text(text, encoding="utf-8")
    return path


def test_a_failed_item_is_recorded_and_alone_retried(tmp_path, capsys, counted):
    """Line 2 cannot be a word swap; line 4 asks for line 1 again (rendered once)."""
    good = {"prompt": SRC, "target": TGT}
    bad = {"prompt": SRC, "target": "a blue big circle on a white background", "kind": "swap"}
    lines = [good, bad, good | {"seed": 1}, good | {"name": "again"}]
    argv = ["batch", str(manifest(tmp_path, *lines)), "--out", str(tmp_path / "out"), *RUN]
    assert main(argv) == 1
    assert summary(capsys) == (2, 0, 1)
    table = rows(tmp_path / "out")
    assert [r["status"] for r in table] == ["done", "failed", "done", "done"]
    assert "same number of words" in table[1]["error"]
    assert [r["error"] for r in table[::2]] == ["", ""]
    assert table[3]["key"] == table[0]["key"] and len(counted) == 3
    failed = item_dir(tmp_path / "out", table[1])
    assert [p.name for p in failed.iterdir()] == ["item.json"]

    counted.clear()
    assert main(argv) == 1
    assert summary(capsys) == (0, 2, 1)
    assert counted == [table[1]["key"]]
    again = rows(tmp_path / "out")
    assert [again[0], again[2]] == [table[0], table[2]]  # the done rows as they were
    assert again[1]["status"] == "failed" and again[1]["error"] == table[1]["error"]


def test_an_edit_of_a_word_not_in_the_prompt_fails_its_item(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(sweep_argv(out, "--grid", "reweight:notaword=2")) == 1
    assert summary(capsys) == (0, 0, 1)
    (row,) = rows(out)
    assert row["status"] == "failed" and "'notaword' is not in the prompt" in row["error"]
    assert row["reweight:notaword"] == "2"
    assert (out / "contact-sheet.png").is_file()


def test_a_sweep_of_a_node_of_a_session(tmp_path, capsys):
    f = str(tmp_path / "s.json")
    assert main(["session", "new", f, "--prompt", SRC, "--steps", "2", "--guidance", "4"]) == 0
    assert main(["session", "add", f, "--parent", "n1", "--target", TGT]) == 0
    assert main(["session", "render", f, "--no-cache"]) == 0
    assert (
        main(["session", "add", f, "--parent", "n1", "--target", SRC.replace("red", "green")]) == 0
    )
    stored, images = session_io.load(f)
    before = Path(f).read_bytes()

    square = "a blue square on a white background"
    out = tmp_path / "out"
    argv = ["sweep", "--session", f, "--node", "n2", "--target", square, "--grid", "k=0,0.5"]
    assert main([*argv, "--threads", RUN[-1], "--out", str(out)]) == 0
    assert Path(f).read_bytes() == before  # the sweep leaves the session as it was
    table = rows(out)
    assert [(r["source"], r["target"], r["k"]) for r in table] == [
        (TGT, square, "0"),
        (TGT, square, "0.5"),
    ]
    for row in table:
        folder = item_dir(out, row)
        source = pixels(folder / "source.png")
        assert image_hash(source) == stored.node("n2").image  # the session's own n2
        session, _ = session_io.load(folder / "session.json")
        edit = session.nodes[-1]
        assert [n.id for n in session.nodes[:2]] == ["n1", "n2"] and edit.parent == "n2"
        assert len(session.nodes) == 3 and edit.prompt == square
    capsys.readouterr()
    copy = tmp_path / "item"
    shutil.copytree(item_dir(out, table[1]), copy)
    assert main(["session", "render", str(copy / "session.json"), "--no-cache"]) == 0
    result = image_hash(pixels(copy / "result.png"))
    assert f"{edit.id}: same {result[:12]}" in capsys.readouterr().out


def test_a_batch_imports_a_picture_then_edits_it(tmp_path, capsys):
    from clp2p.shapes import world

    scene = world.Scene("red", "circle", "white", (0.5, 0.5), 0.5)
    Image.fromarray(world.render(scene, 64)[0]).save(tmp_path / "circle.png")
    lines = [
        {"prompt": SRC, "image": "circle.png", "invert": "direct", "target": TGT},
        {"prompt": SRC, "target": TGT, "seed": 3, "preset": "p2p", "k": 0.5, "name": "made"},
    ]
    out = tmp_path / "out"
    assert main(["batch", str(manifest(tmp_path, *lines)), "--out", str(out), *RUN]) == 0
    assert summary(capsys) == (2, 0, 0)
    imported, made = rows(out)
    assert imported["image"] == str(tmp_path / "circle.png") and made["name"] == "made"
    assert made["seed"] == "3" and float(imported["iou"]) >= 0.0
    session, _ = session_io.load(item_dir(out, imported) / "session.json")
    assert session.imported is not None and session.imported.inversion.method == "direct"
    assert session.imported.file == "circle.png"
    made_session, _ = session_io.load(item_dir(out, made) / "session.json")
    assert made_session.imported is None and made_session.nodes[1].params.k == 0.5

    copy = tmp_path / "item"
    shutil.copytree(item_dir(out, imported), copy)
    assert main(["session", "render", str(copy / "session.json"), "--no-cache"]) == 0
    result = image_hash(pixels(copy / "result.png"))
    assert f"n2: same {result[:12]}" in capsys.readouterr().out


def test_an_item_renders_the_same_whatever_else_the_sweep_holds(swept, tmp_path):
    """The last item of the 4-item sweep, alone; and second in a sweep over two seeds."""
    last = rows(swept)[3]
    alone = tmp_path / "alone"
    assert main(sweep_argv(alone, "--grid", "k=0.5", "--grid", "cross=0.8")) == 0
    seeds = tmp_path / "seeds"
    assert main(sweep_argv(seeds, "--grid", "cross=0.8", "--grid", "k=0.5", "--seeds", "1,0")) == 0
    (one,) = rows(alone)
    other_seed, same = rows(seeds)
    assert one["key"] == same["key"] == last["key"] and other_seed["seed"] == "1"
    expected = (item_dir(swept, last) / "result.png").read_bytes()
    for folder, row in ((alone, one), (seeds, same)):
        assert (item_dir(folder, row) / "result.png").read_bytes() == expected
        assert np.array_equal(
            pixels(item_dir(folder, row) / "source.png"),
            pixels(item_dir(swept, last) / "source.png"),
        )
    assert not np.array_equal(
        pixels(item_dir(seeds, other_seed) / "source.png"),
        pixels(item_dir(seeds, same) / "source.png"),
    )
