"""``clp2p sweep --ray auto``: the command starts Ray and its workers before it loads its own
libraries, and writes the same results folder as in this process."""

from __future__ import annotations

import json

import pytest

from clp2p.cli.main import main

pytest.importorskip("ray")

SOURCE = "a red circle on a white background"


def test_a_sweep_on_local_ray_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "out"
    args = ["sweep", "--source", SOURCE, "--target", SOURCE.replace("red", "green")]
    args += ["--grid", "cross=0.2,0.6", "--steps", "3", "--guidance", "4", "--out", str(out)]
    assert main([*args, "--ray", "auto", "--workers", "2"]) == 0
    assert "2 items: 2 rendered" in capsys.readouterr().out
    rows = json.loads((out / "results.json").read_text())["items"]
    assert [r["status"] for r in rows] == ["done", "done"]
    assert all(r["scores"]["edit"] == "colour" for r in rows)
    assert (out / "contact-sheet.png").is_file()
    assert main([*args, "--ray", "auto", "--workers", "2"]) == 0  # resumed: nothing to do
    assert "0 rendered, 2 done before" in capsys.readouterr().out
