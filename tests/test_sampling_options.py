"""Negative prompts and schedulers: a render with a negative prompt, or with DPM-Solver++ 2M or
Euler (Karras sigmas or not), gives the pixels of diffusers' own pipeline with the same
options; every edit and session reuse stays exact with them; sessions, the CLI and exports
keep them; imported pictures refuse what their inversion cannot follow."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clp2p.cli.main import main
from clp2p.errors import Clp2pError
from clp2p.model.presets import preset
from clp2p.model.session import Session, chain_key
from clp2p.model.settings import SCHEDULERS, RenderSettings
from clp2p.workflows import session_io
from clp2p.workflows.session_render import SessionRenderer, apply
from tiny import diffusers_image

SRC = "a red circle on a white background"
TGT = "a blue circle on a white background"
BASE = RenderSettings(seed=2, steps=4, guidance=5.0, width=32, height=32)
SAMPLERS = [
    ("ddim", False),
    ("dpm++2m", False),
    ("dpm++2m", True),
    ("euler", False),
    ("euler", True),
]


@pytest.fixture(scope="module")
def xl_engine():
    from clp2p.engine.engine import Engine
    from clp2p.engine.loading import choose_device
    from tiny import tiny_xl_pipeline

    return Engine(tiny_xl_pipeline(), choose_device("cpu", "fp32"), name="tiny-xl")


@pytest.mark.parametrize("name, karras", SAMPLERS)
@pytest.mark.parametrize("negative", ["", "blurry, low quality"])
def test_generation_equals_diffusers_pipeline(tiny_engine, name, karras, negative):
    settings = RenderSettings(
        seed=2, steps=4, guidance=5.0, width=32, height=32, negative=negative,
        scheduler=name, karras=karras,
    )  # fmt: skip
    ours = tiny_engine.generate(SRC, settings).images[0]
    assert (
        np.abs(
            ours.astype(int) - diffusers_image(tiny_engine.pipe, SRC, settings).astype(int)
        ).max()
        <= 1
    )


@pytest.mark.parametrize("name, karras", [("ddim", False), ("dpm++2m", True)])
def test_sdxl_negative_prompt_and_scheduler_equal_the_sdxl_pipeline(xl_engine, name, karras):
    settings = RenderSettings(
        seed=2, steps=4, guidance=5.0, width=32, height=32, negative="a green square",
        scheduler=name, karras=karras,
    )  # fmt: skip
    ours = xl_engine.generate(SRC, settings).images[0]
    assert (
        np.abs(ours.astype(int) - diffusers_image(xl_engine.pipe, SRC, settings).astype(int)).max()
        <= 1
    )


def test_the_negative_prompt_changes_the_picture(tiny_engine):
    plain = tiny_engine.generate(SRC, BASE).images[0]
    negative = RenderSettings(**{**BASE.to_json(), "negative": "a blue square"})
    assert not np.array_equal(plain, tiny_engine.generate(SRC, negative).images[0])


@pytest.mark.parametrize("name, karras", SAMPLERS[1:])
def test_edits_and_session_reuse_stay_exact(tiny_engine, name, karras):
    settings = RenderSettings(
        seed=2, steps=4, guidance=5.0, width=32, height=32, negative="blurry",
        scheduler=name, karras=karras,
    )  # fmt: skip
    same = tiny_engine.edit(SRC, [(SRC, preset("p2p").with_(kind="swap"))], settings)
    assert np.array_equal(same.images[0], same.images[1])
    session = Session.new(SRC, settings, "tiny")
    session, child = session.add_edit("n1", TGT, preset("cl-p2p"))
    session, grand = session.add_edit(child, TGT.replace("circle", "square"), preset("p2p"))
    renderer = SessionRenderer(tiny_engine)
    for node_id in ("n1", child):
        session = apply(session, renderer.render(session, node_id))
    warm = renderer.render(session, grand)
    cold = SessionRenderer(tiny_engine).render(session, grand, use_cache=False)
    assert warm.computed == 1 and warm.hash == cold.hash


def test_the_options_are_part_of_what_a_record_is_keyed_by():
    session = Session.new(SRC, BASE, "tiny")
    keys = {chain_key(session, session.path("n1"))}
    for change in (
        {"negative": "x"},
        {"scheduler": "euler"},
        {"scheduler": "euler", "karras": True},
    ):
        other = session.with_settings(RenderSettings(**{**BASE.to_json(), **change}))
        keys.add(chain_key(other, other.path("n1")))
    assert len(keys) == 4


def test_sessions_and_exports_keep_the_options(tmp_path):
    from clp2p_studio.files import node_parameters

    settings = RenderSettings(**{**BASE.to_json(), "negative": "fog", "scheduler": "euler"})
    settings = RenderSettings(**{**settings.to_json(), "karras": True})
    session = Session.new(SRC, settings, "shapes")
    path = tmp_path / "s.json"
    session_io.save(session, path)
    assert session_io.load(path)[0].settings == settings
    stored = json.loads(path.read_text())["settings"]
    assert (stored["negative"], stored["scheduler"], stored["karras"]) == ("fog", "euler", True)
    plain = Session.new(SRC, BASE, "shapes")  # the defaults are not written
    session_io.save(plain, path)
    assert set(json.loads(path.read_text())["settings"]) == {
        "seed", "steps", "guidance", "width", "height"
    }  # fmt: skip
    exported = node_parameters(session, "n1")["settings"]
    assert exported["scheduler"] == "euler" and exported["negative"] == "fog"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"scheduler": "ddim", "karras": True}, "DDIM has no Karras sigmas"),
        ({"scheduler": "heun"}, "scheduler 'heun' is unknown"),
        ({"negative": "\ud800"}, "negative prompt"),
    ],
)
def test_bad_options_are_refused(change, message):
    with pytest.raises(Clp2pError, match=message):
        RenderSettings(**{**BASE.to_json(), **change})


def test_cli_takes_and_refuses_the_options(tmp_path, capsys):
    path = tmp_path / "s.json"
    new = ["session", "new", str(path), "--prompt", SRC, "--steps", "4"]
    assert main([*new, "--negative", "fog", "--scheduler", "dpm++2m", "--karras"]) == 0
    settings = session_io.load(path)[0].settings
    assert (settings.negative, settings.scheduler, settings.karras) == ("fog", "dpm++2m", True)
    capsys.readouterr()
    for bad in (["--karras"], ["--scheduler", "heun"]):
        assert _rc([*new, "--force", *bad]) == 2
        err = capsys.readouterr().err
        assert err.startswith("clp2p: error:") and err.count("\n") == 1
    assert session_io.load(path)[0].settings == settings  # the refused commands wrote nothing


def _rc(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as exc:  # argparse's refusals
        return int(exc.code)


def test_too_long_negative_prompt_is_refused(tiny_engine):
    settings = RenderSettings(**{**BASE.to_json(), "negative": "red " * 100})
    with pytest.raises(Clp2pError, match="tokens"):
        tiny_engine.generate(SRC, settings)


@pytest.mark.parametrize(
    "method, change, message",
    [
        ("direct", {"scheduler": "euler"}, "DDIM inversion"),
        ("null-text", {"negative": "fog"}, "defines the unconditional half"),
        ("negative-prompt", {"negative": "fog"}, "defines the unconditional half"),
    ],
)
def test_imported_pictures_refuse_what_their_inversion_cannot_follow(
    tiny_engine, method, change, message
):
    from clp2p.engine.inversion import invert
    from clp2p.model.params import Branch

    settings = RenderSettings(seed=0, steps=3, guidance=3.0, width=32, height=32)
    picture = tiny_engine.generate(SRC, settings).images[0]
    inversion = invert(tiny_engine, picture, SRC, settings, method, inner_steps=1).inversion
    bad = RenderSettings(**{**settings.to_json(), **change})
    with pytest.raises(Clp2pError, match=message):
        tiny_engine.render([Branch(SRC)], bad, inversion=inversion)
    if method == "direct":  # a negative prompt works with direct inversion
        fog = RenderSettings(**{**settings.to_json(), "negative": "fog"})
        result = tiny_engine.render(
            [Branch(SRC), Branch(TGT, 0, preset("p2p"))], fog, inversion=inversion
        )
        assert len(result.images) == 2


def test_every_scheduler_is_listed_for_the_cli_and_the_studio(qtbot):
    from clp2p_studio.root_settings import RootSettingsBox

    box = RootSettingsBox()
    qtbot.addWidget(box)
    assert [box.scheduler.itemText(i) for i in range(box.scheduler.count())] == list(SCHEDULERS)
