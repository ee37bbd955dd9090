"""Error messages name fields, and each front end shows a field in its own words."""

from __future__ import annotations

import pytest

from clp2p.cli.main import main
from clp2p.errors import FIELD_LABELS, Clp2pError
from clp2p.model.params import EditParams, StepWindow
from clp2p.model.settings import RenderSettings


def test_a_rule_names_its_field_not_a_flag():
    with pytest.raises(Clp2pError) as caught:
        EditParams(k=3)
    error = caught.value
    assert error.fields == ("k",)
    assert str(error) == "k 3 is outside [0, 1]: the silhouette threshold is a fraction"
    assert error.render({"k": "--k"}).startswith("--k 3 is outside")


def test_the_studio_reads_labels_and_the_cli_its_flags():
    with pytest.raises(Clp2pError) as caught:
        EditParams(v_blend=0.5)  # no V window
    error = caught.value
    assert set(error.fields) == {"v_blend", "v_window"}
    assert str(error) == (
        "V blend is set but the V injection window is empty: give e.g. V injection 0.5"
    )
    assert error.render({"v_blend": "--v-blend", "v_window": "--v-inject"}) == (
        "--v-blend is set but the --v-inject window is empty: give e.g. --v-inject 0.5"
    )
    assert FIELD_LABELS["v_window"] == "V injection"


def test_user_text_is_never_read_as_a_placeholder():
    with pytest.raises(Clp2pError) as caught:
        StepWindow.parse("{k}:{steps}", "self_window")
    assert str(caught.value) == (
        "self-attention '{k}:{steps}' is not a step window: write a fraction F (e.g. 0.8) "
        "or a range A:B (e.g. 0.1:0.6)"
    )


def test_a_nested_error_keeps_its_fields():
    with pytest.raises(Clp2pError) as caught:
        StepWindow.parse("0.5:2", "v_window")
    assert caught.value.fields == ("v_window",)
    assert caught.value.render({"v_window": "--v-inject"}).startswith(
        "--v-inject: step window 0.5:2 is outside [0, 1]"
    )


def test_settings_errors_name_their_field():
    with pytest.raises(Clp2pError) as caught:
        RenderSettings(steps=0)
    assert caught.value.render({"steps": "--steps"}) == "--steps 0: give at least 1 denoising step"


def test_the_cli_shows_the_flag_the_command_takes(tmp_path, capsys):
    """`clp2p edit` takes the kind as --edit, `clp2p session add` as --kind."""
    assert main(["edit", "--source", "a red circle", "--edit", "reweight", "--out", str(tmp_path)])
    assert "--edit reweight needs at least one --reweight WORD=SCALE" in capsys.readouterr().err
    assert main(["edit", "--source", "a b", "--target", "a b", "--k", "7", "--out", str(tmp_path)])
    assert capsys.readouterr().err.strip() == (
        "clp2p: error: --k 7 is outside [0, 1]: the silhouette threshold is a fraction"
    )
