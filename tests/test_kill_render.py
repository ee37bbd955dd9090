"""``kill -9`` at any point of ``clp2p session render``: the file always loads, and every node
that was stored before the kill (it said so on stdout) is still rendered."""

from __future__ import annotations

import multiprocessing
import random
import shutil
import sys
import time
from pathlib import Path

import pytest

from clp2p.cli.main import main
from clp2p.workflows import session_io

KILLS = 20
PRELOAD = [  # what a render imports, so that a forked one starts rendering at once
    "clp2p.cli.main",
    "clp2p.cli.session",
    "clp2p.engine.loading",
    "clp2p.workflows.session_render",
    "diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion",
    "transformers.models.clip.modeling_clip",
]
A, B = "a red circle on a white background", "a blue circle on a white background"


def _session(path, model) -> None:
    assert main(["session", "new", str(path), "--prompt", A, "--steps", "3", "--model", model]) == 0
    parents = ["n1"]
    for i in range(7):  # a tree of 8 nodes: edits and reversals
        parent = parents[i // 2]
        target = B if i % 2 == 0 else A
        assert main(["session", "add", str(path), "--parent", parent, "--target", target]) == 0
        parents.append(f"n{i + 2}")


def _command(argv: list[str], out: str) -> None:
    """A ``clp2p`` command in a process forked from a server that has imported clp2p, torch
    and diffusers already (starting Python and importing them costs more than the render)."""
    sys.stdout = open(out, "w", buffering=1)  # noqa: SIM115 - line by line, until killed
    from clp2p.cli.main import main as clp2p

    sys.exit(clp2p(argv))


@pytest.fixture(scope="module")
def forks():
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


def _render(forks, path, model):
    argv = ["session", "render", str(path), "--model", model]
    proc = forks.Process(target=_command, args=(argv, f"{path}.out"))
    proc.start()
    return proc


def _timeline(forks, path, model) -> list[float]:
    """Seconds from the start to each node's store, in a render that is not killed."""
    start = time.monotonic()
    proc = _render(forks, path, model)
    out, times = f"{path}.out", []
    while proc.is_alive() or len(times) < len(_stored(out)):
        while len(times) < len(_stored(out)):
            times.append(time.monotonic() - start)
        time.sleep(0.02)
    assert proc.exitcode == 0
    return times


def _stored(out: str) -> list[str]:
    """The nodes the render said it stored (its lines so far)."""
    try:
        text = Path(out).read_text()
    except FileNotFoundError:
        return []
    return [line.split(":")[0] for line in text.splitlines() if ": new " in line]


def test_a_render_killed_anywhere_loses_no_stored_node(tmp_path, tiny_model_dir, forks):
    model = str(tiny_model_dir)
    base = tmp_path / "base.json"
    _session(base, model)
    for probe in ("warm-up", "probe"):  # the first also starts the fork server: not timed
        shutil.copy(base, tmp_path / f"{probe}.json")
        times = _timeline(forks, tmp_path / f"{probe}.json", model)
    assert len(times) == 8
    rng = random.Random(1234)
    # from just before the first node is stored to just after the last one
    low, high = max(0.0, times[0] - 0.5), times[-1] + 0.2
    midway = 0  # kills after some nodes were stored and before the last
    for kill in range(KILLS):
        path = tmp_path / f"k{kill}.json"
        shutil.copy(base, path)
        delay = rng.uniform(low, high)
        proc = _render(forks, path, model)
        time.sleep(delay)
        proc.kill()  # SIGKILL
        proc.join()
        stored = _stored(f"{path}.out")
        session, images = session_io.load(path)  # it always loads
        for node_id in stored:
            node = session.node(node_id)
            assert node.status == "rendered" and node.image in images, (kill, delay, node_id)
        midway += 0 < len(stored) < len(times)
    # the kills fell across the render: at least a quarter of them between two stores
    assert midway >= KILLS // 4
