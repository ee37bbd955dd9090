"""Sweeps on a local Ray instance with two single-threaded workers: the same images as in this
process, bit for bit; a failing item recorded while the rest go on; workers killed mid-run
(restarted by Ray, their items retried) with no item lost or written twice; a resumed run."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from PIL import Image

from clp2p.model.presets import preset
from clp2p.model.session import Session
from clp2p.model.settings import RenderSettings
from clp2p.model.sweep import Grid, sweep_items
from clp2p.workflows.runner import LocalPool, RayPool, Worker
from clp2p.workflows.service import ModelSpec
from clp2p.workflows.sweep import ResultsFolder, run_items

ray = pytest.importorskip("ray")

SPEC = ModelSpec("shapes", "cpu", "fp32")
SETTINGS = RenderSettings(seed=11, steps=3, guidance=4.0)
SOURCE = "a red circle on a white background"


def _items(grid: list[str], target: str = "a blue circle on a white background", seeds=()):
    session = Session.new(SOURCE, SETTINGS, "shapes")
    return sweep_items(session, "n1", target, preset("cl-p2p"), Grid.parse(grid), seeds)


def _pixels(folder, key: str) -> np.ndarray:
    with Image.open(folder / "items" / key[:16] / "result.png") as im:
        return np.asarray(im.convert("RGB"))


@pytest.fixture(scope="module")
def pool():
    """One local Ray instance and its two workers for the module (start-up is most of the
    time); the test that kills the workers runs last."""
    with RayPool(SPEC, "auto", 2, 1) as started:
        started.wait()  # both workers have loaded the model
        yield started


def test_ray_gives_the_same_images_and_records_a_failure(tmp_path, pool):
    items = _items(["cross=0.2,0.6", "self=0.4,0.8"])
    failing = _items(["reweight:notaword=2"])  # the word is not in the prompt
    with LocalPool(Worker(SPEC, 1)) as local:
        alone = run_items(items, tmp_path / "local", local, {"kind": "test"})
    report = run_items(items + failing, tmp_path / "ray", pool, {"kind": "test"})
    assert "2 workers" in pool.where
    assert (report.rendered, report.failed) == (4, 1)
    assert len({r["worker"] for r in report.rows}) == 2  # both workers took items
    bad = report.rows[-1]
    assert bad["status"] == "failed" and "notaword" in bad["error"]
    for row in alone.rows:
        here, there = _pixels(tmp_path / "local", row["key"]), _pixels(tmp_path / "ray", row["key"])
        assert np.array_equal(here, there)


def test_a_resumed_ray_run_renders_only_what_is_missing(tmp_path, pool):
    run_items(_items(["cross=0.2,0.6"]), tmp_path / "out", pool, {"kind": "test"})
    report = run_items(_items(["cross=0.2,0.6,0.8"]), tmp_path / "out", pool, {"kind": "test"})
    assert (report.rendered, report.skipped) == (1, 2)


def test_workers_killed_mid_run_lose_no_item(tmp_path, pool):
    items = _items(["cross=0.2,0.4,0.6", "self=0.4,0.8"])
    names = ray.get([a.ready.remote() for a in pool.actors])
    seen: list[str] = []

    def on_item(row, done, total):
        seen.append(row["key"])
        if len(seen) == 1:  # one worker idle, the other mid-item: both die
            for name in names:
                os.kill(int(name.rsplit(":", 1)[1]), signal.SIGKILL)

    report = run_items(items, tmp_path / "out", pool, {"kind": "test"}, on_item=on_item)
    keys = [i.key() for i in items]
    assert sorted(seen) == sorted(keys)  # every item written, once
    assert report.failed == 0 and all(r["status"] == "done" for r in report.rows)
    assert {r["worker"] for r in report.rows} - set(names)  # restarted workers took the rest
    assert all(ResultsFolder(tmp_path / "out").done(k) for k in keys)


@pytest.mark.parametrize(
    "address, message",
    [
        ("127.0.0.1:1", "cannot reach the Ray cluster at '127.0.0.1:1'"),
        ("no-such-host.invalid:6379", "cannot reach the Ray cluster"),
        ("justahost", "give HOST:PORT"),
    ],
)
def test_an_unreachable_cluster_is_one_line_at_once(tmp_path, capsys, address, message):
    from clp2p.cli.main import main

    args = ["sweep", "--source", SOURCE, "--target", SOURCE.replace("red", "blue")]
    code = main([*args, "--steps", "2", "--out", str(tmp_path / "out"), "--ray", address])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
