"""A new session's sampling comes from its model: the shapes model's card recommends 30 steps
at guidance 4 (what every evaluation uses), a model without a card gets Stable Diffusion's
usual 50 steps at 7.5; flags given on the command line win."""

from __future__ import annotations

import json

import pytest

from clp2p.cli.main import main
from clp2p.errors import Clp2pError
from clp2p.model.card import ModelCard, card_of
from clp2p.model.settings import RenderSettings
from clp2p.workflows import session_io

PROMPT = "a red circle on a white background"


def _card(tmp_path, sampling) -> ModelCard:
    doc = {"format": "clp2p-model-card", "version": 1, "sampling": sampling}
    (tmp_path / "clp2p.json").write_text(json.dumps(doc))
    return ModelCard.read(tmp_path)


def test_the_shapes_card_recommends_its_evaluation_settings():
    settings = card_of("shapes").settings()
    assert (settings.steps, settings.guidance, settings.width) == (30, 4.0, None)
    assert card_of("/no/such/folder").settings() == RenderSettings()


def test_a_card_may_set_the_size_and_given_values_win(tmp_path):
    card = _card(tmp_path, {"steps": 20, "guidance": 3, "size": 96})
    assert card.settings() == RenderSettings(steps=20, guidance=3.0, width=96, height=96)
    assert card.settings(steps=8, guidance=None).steps == 8


@pytest.mark.parametrize(
    "sampling, message",
    [
        ({"steps": 0}, "at least 1"),
        ({"guidance": "high"}, "sampling"),
        ({"sampler": "ddim"}, "sampling takes steps, guidance, size"),
        ([30], "sampling takes"),
    ],
)
def test_a_bad_card_is_one_line_naming_it(tmp_path, sampling, message):
    with pytest.raises(Clp2pError, match=message):
        _card(tmp_path, sampling)


@pytest.mark.parametrize(
    "flags, expected",
    [([], (30, 4.0)), (["--steps", "12"], (12, 4.0)), (["--guidance", "6"], (30, 6.0))],
)
def test_a_new_session_on_the_shapes_model_takes_its_card(tmp_path, flags, expected):
    path = tmp_path / "s.json"
    assert main(["session", "new", str(path), "--prompt", PROMPT, *flags]) == 0
    settings = session_io.load(path)[0].settings
    assert (settings.steps, settings.guidance) == expected


def test_a_model_without_a_card_gets_stable_diffusions_usual_settings(tmp_path, tiny_model_dir):
    path = tmp_path / "s.json"
    assert (
        main(["session", "new", str(path), "--prompt", PROMPT, "--model", str(tiny_model_dir)]) == 0
    )
    settings = session_io.load(path)[0].settings
    assert (settings.steps, settings.guidance) == (50, 7.5)


def test_the_studio_opens_a_new_session_with_the_models_settings():
    from clp2p_studio.files import untitled

    settings = untitled().session.settings
    assert (settings.steps, settings.guidance) == (30, 4.0)
