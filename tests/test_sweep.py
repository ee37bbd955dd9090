"""Sweeps and batches as plain data (no model): the grid of parameter values, what each axis
changes in an edit, seeds, the items a sweep or a manifest line becomes and their keys."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from clp2p.errors import Clp2pError
from clp2p.model.imported import ImportedImage, Inversion
from clp2p.model.params import CrossWindow, EditParams, StepWindow
from clp2p.model.presets import preset
from clp2p.model.session import SCHEMA_VERSION as SCHEMA
from clp2p.model.session import Session, image_hash
from clp2p.model.settings import RenderSettings
from clp2p.model.sweep import (
    MAX_ITEMS,
    Grid,
    Picture,
    axis,
    chain_session,
    parse_seeds,
    sweep_items,
)
from clp2p.workflows.manifest import item as manifest_item

PROMPT = "a red circle on a white background"
TARGET = "a blue circle on a white background"
SETTINGS = RenderSettings(seed=0, steps=2)


def _apply(spec: str, params: EditParams | None = None) -> EditParams:
    """``params`` (default: CL P2P) changed by the one cell of the grid ``spec``."""
    grid = Grid.parse([spec])
    assert grid.size == 1
    return grid.apply(params or preset("cl-p2p"), grid.cells()[0])


def test_grid_values_are_parsed_once_each_in_the_order_given():
    grid = Grid.parse(["k=0.3, 0,0.30", "cross=0.2:0.6,0.8", "self-res=all,8"])
    assert grid.axes == (
        ("k", (0.3, 0.0)),
        ("cross", (StepWindow(0.2, 0.6), StepWindow(0.0, 0.8))),
        ("self-res", (None, 8)),
    )
    assert grid.size == 8
    assert grid.to_json() == {
        "k": ["0.3", "0"],
        "cross": ["0.2:0.6", "0.8"],
        "self-res": ["all", "8"],
    }


def test_cells_vary_the_last_axis_fastest():
    grid = Grid.parse(["k=0,0.5", "beta=0.1,0.2,0.3"])
    cells = grid.cells()
    assert [(dict(c)["k"], dict(c)["beta"]) for c in cells] == [
        (0.0, 0.1),
        (0.0, 0.2),
        (0.0, 0.3),
        (0.5, 0.1),
        (0.5, 0.2),
        (0.5, 0.3),
    ]
    assert Grid.parse([]).cells() == [()]  # no axis: one item, the edit as given


def test_each_axis_changes_its_parameter_and_nothing_else():
    base = preset("cl-p2p").with_(
        cross=CrossWindow(StepWindow(0, 0.2), (("blue", StepWindow(0, 0.5)),))
    )
    crossed = _apply("cross=0.2:0.6", base)
    assert crossed.cross.default == StepWindow(0.2, 0.6)
    assert crossed.cross.words == (("blue", StepWindow(0, 0.5)),)  # per-word windows stay
    assert crossed.with_(cross=base.cross) == base
    assert _apply("k=0.4").k == 0.4
    assert _apply("self=0.1:0.9").self_window == StepWindow(0.1, 0.9)
    assert _apply("self-res=all").self_res is None
    assert _apply("self-res=8").self_res == 8
    assert _apply("self-layers=4:14").self_layers == (4, 14)
    assert _apply("self-layers=all", preset("fpe")).self_layers is None
    assert _apply("v=0.5").v_window == StepWindow(0, 0.5)
    v_on = preset("cl-p2p").with_(v_window=StepWindow(0, 0.5))
    assert _apply("beta=0.25", v_on).v_blend == 0.25
    assert _apply("v-layers=both").v_layers == "both"
    assert _apply("preset=fpe") == preset("fpe")


def test_a_reweight_axis_adds_or_replaces_one_word():
    base = preset("cl-p2p").with_(reweight=(("blue", 1.5), ("red", 3.0)))
    assert dict(_apply("reweight:circle=2", base).reweight) == {
        "blue": 1.5,
        "red": 3.0,
        "circle": 2.0,
    }
    replaced = _apply("reweight:red=2", base).reweight
    assert dict(replaced) == {"blue": 1.5, "red": 2.0} and len(replaced) == 2
    assert axis("reweight:red").name == "reweight:red"


def test_a_preset_is_applied_first_whatever_the_axis_order():
    base = preset("cl-p2p").with_(reweight=(("blue", 2.0),), blend_words=("circle",))
    grid = Grid.parse(["k=0.7", "self=0.5", "preset=p2p"])
    params = grid.apply(base, grid.cells()[0])
    expected = preset("p2p").with_(
        k=0.7, self_window=StepWindow(0, 0.5), reweight=base.reweight, blend_words=("circle",)
    )
    assert params == expected  # k and self from the grid, the rest from p2p


def test_seeds_are_numbers_and_ranges_once_each():
    assert parse_seeds("0-3,7") == (0, 1, 2, 3, 7)
    assert parse_seeds(" 5 , 2-3, 3") == (5, 2, 3)
    assert parse_seeds("4-4") == (4,)
    for bad in ("5-1", "-1", "x", "1-", "", "0.5", f"0-{MAX_ITEMS}"):
        with pytest.raises(Clp2pError):
            parse_seeds(bad)


@pytest.mark.parametrize(
    "specs, message",
    [
        (["zoom=1,2"], "not a parameter a sweep varies"),
        (["k"], "write NAME=V1,V2"),
        (["k="], "write NAME=V1,V2"),
        (["k=0.1,"], "not a number"),
        (["k=2"], "outside [0, 1]"),
        (["cross=0.9:0.1"], "starts after it ends"),
        (["k=0.1", "k=0.2"], "given twice"),
        (["seed=1,2"], "seeds"),
        (["reweight:=2"], "not a parameter a sweep varies"),
        (["self-res=0"], "self"),
        (["preset=p3p"], "not one of"),
        (
            [
                "k=" + ",".join(str(i / 1000) for i in range(101)),
                "beta=" + ",".join(str(i / 100) for i in range(100)),
            ],
            "at most",
        ),
    ],
)
def test_a_bad_grid_is_one_clear_error(specs, message):
    """Refused as it is read, or (a value out of its range) as it is put in the edit."""
    with pytest.raises(Clp2pError, match=message.replace("[", r"\[")):
        grid = Grid.parse(specs)
        for cell in grid.cells():
            grid.apply(preset("cl-p2p"), cell)


def _tree() -> Session:
    """n1 (rendered) -> n2 (rendered), and a sibling n3 that is not on n2's chain."""
    s = Session.new(PROMPT, SETTINGS, "shapes")
    s, _ = s.add_edit("n1", TARGET, preset("cl-p2p"))
    s, _ = s.add_edit("n1", "a green circle on a white background", preset("p2p"))
    s = s.update("n1", status="rendered", image="a" * 64)
    return s.update("n2", status="rendered", image="b" * 64)


def test_a_chain_keeps_its_renders_unless_the_seed_changes():
    s = _tree()
    same = chain_session(s, "n2", seed=0)
    assert [n.id for n in same.nodes] == ["n1", "n2"]
    assert [n.status for n in same.nodes] == ["rendered", "rendered"]
    assert chain_session(s, "n2") == same
    reseeded = chain_session(s, "n2", seed=5)
    assert reseeded.settings.seed == 5 and reseeded.settings.steps == SETTINGS.steps
    assert [(n.status, n.image) for n in reseeded.nodes] == [("new", None), ("new", None)]
    assert s.node("n2").status == "rendered"  # the session given is unchanged


def _imported() -> Session:
    picture = np.zeros((64, 64, 3), dtype=np.uint8)
    latents = np.zeros((3, 4, 16, 16), dtype=np.float32)
    imported = ImportedImage(Inversion("direct", PROMPT, latents), image_hash(picture), "crop")
    return Session.from_image(imported, SETTINGS, "shapes")


def test_an_imported_root_refuses_other_seeds():
    s = _imported()
    assert chain_session(s, "n1", seed=0).nodes == s.nodes  # its own seed is no change
    with pytest.raises(Clp2pError, match="imported picture"):
        chain_session(s, "n1", seed=1)
    with pytest.raises(Clp2pError, match="imported picture"):
        sweep_items(s, "n1", TARGET, preset("cl-p2p"), Grid.parse(["k=0,0.3"]), (0, 1))


def _keys(**change) -> list[str]:
    args = {
        "session": Session.new(PROMPT, SETTINGS, "shapes"),
        "node_id": "n1",
        "target": TARGET,
        "params": preset("cl-p2p"),
        "grid": Grid.parse(["k=0,0.3"]),
        "seeds": (0,),
    } | change
    return [item.key() for item in sweep_items(**args)]


def test_items_are_seeds_then_cells_and_each_edits_the_node():
    items = sweep_items(
        _tree(),
        "n2",
        "a blue square on a white background",
        preset("cl-p2p"),
        Grid.parse(["k=0,0.3"]),
        (1, 0),
    )
    assert [dict(i.values) for i in items] == [
        {"k": "0", "seed": "1"},
        {"k": "0.3", "seed": "1"},
        {"k": "0", "seed": "0"},
        {"k": "0.3", "seed": "0"},
    ]
    for item in items:
        edit = item.session.node(item.node_id)
        assert item.parent == "n2" and edit.prompt == "a blue square on a white background"
        assert [n.id for n in item.session.nodes] == ["n1", "n2", item.node_id]
        assert item.session.settings.seed == int(dict(item.values)["seed"])
    assert [i.session.node(i.node_id).params.k for i in items] == [0.0, 0.3, 0.0, 0.3]
    # seed 0 is the session's: its chain keeps the renders it has, seed 1's is to render
    assert items[2].session.node("n2").status == "rendered"
    assert items[0].session.node("n2").status == "new"


def test_an_item_key_is_everything_its_image_depends_on():
    keys = _keys()
    assert _keys() == keys and len(set(keys)) == 2
    other_session = Session.new(PROMPT, replace(SETTINGS, steps=3), "shapes")
    changed = {
        "seed": _keys(seeds=(1,)),
        "params": _keys(params=preset("cl-p2p").with_(self_res=8)),
        "target": _keys(target="a green circle on a white background"),
        "source": _keys(
            session=Session.new("a red square on a white background", SETTINGS, "shapes")
        ),
        "model": _keys(session=Session.new(PROMPT, SETTINGS, "other-model")),
        "steps": _keys(session=other_session),
        "grid": _keys(grid=Grid.parse(["k=0.1,0.2"])),
    }
    for what, other in changed.items():
        assert not set(other) & set(keys), what
    # the order of the axes is not part of an item
    a = sweep_items(
        Session.new(PROMPT, SETTINGS, "shapes"),
        "n1",
        TARGET,
        preset("cl-p2p"),
        Grid.parse(["k=0.3", "self=0.5"]),
    )
    b = sweep_items(
        Session.new(PROMPT, SETTINGS, "shapes"),
        "n1",
        TARGET,
        preset("cl-p2p"),
        Grid.parse(["self=0.5", "k=0.3"]),
    )
    assert a[0].key() == b[0].key()


def test_an_imported_item_key_holds_the_picture():
    item = manifest_item(
        1, {"prompt": PROMPT, "target": TARGET, "image": "p.png"}, SETTINGS, "shapes"
    )
    assert item.picture == Picture("p.png")
    assert item.key("a" * 64) == item.key("a" * 64)
    assert item.key("a" * 64) != item.key("b" * 64)
    other = replace(item, picture=replace(item.picture, method="null-text"))
    assert other.key("a" * 64) != item.key("a" * 64)


def test_a_sweep_over_too_many_items_is_refused_before_building_them():
    grid = Grid.parse(["k=0,0.5"])
    with pytest.raises(Clp2pError, match=f"at most {MAX_ITEMS}"):
        sweep_items(
            Session.new(PROMPT, SETTINGS, "shapes"),
            "n1",
            TARGET,
            preset("cl-p2p"),
            grid,
            tuple(range(MAX_ITEMS // 2 + 1)),
        )


def test_a_manifest_line_fills_the_defaults_and_its_preset():
    data = {"prompt": PROMPT, "target": TARGET, "seed": 3, "preset": "p2p", "k": 0.5, "name": "x"}
    item = manifest_item(4, data, RenderSettings(seed=9, steps=2, guidance=4.0), "shapes")
    edit = item.session.node(item.node_id)
    assert item.session.settings == RenderSettings(seed=3, steps=2, guidance=4.0)
    assert edit.params == preset("p2p").with_(k=0.5, kind="swap")
    assert dict(item.values) == {"name": "x", "seed": "3"}
    assert item.picture is None and item.session.model == "shapes"


def test_a_manifest_line_takes_every_edit_field_a_session_file_can_hold():
    import json

    from clp2p.resources import resources_dir
    from clp2p.workflows.manifest import PARAM_FIELDS

    schema = json.loads(
        (resources_dir() / "schemas" / f"session-v{SCHEMA}.schema.json").read_text()
    )
    assert set(PARAM_FIELDS) == set(schema["$defs"]["params"]["properties"])
    data = {"prompt": PROMPT, "target": TARGET, "k": 0.3, "blend_norm": True}
    data |= {"blend_pixels": True, "blend_start": 0.2}
    edit = manifest_item(1, data, SETTINGS, "shapes").session.nodes[-1].params
    assert (edit.blend_norm, edit.blend_pixels, edit.blend_start) == (True, True, 0.2)


@pytest.mark.parametrize(
    "data, message",
    [
        ([PROMPT], "one JSON object per line"),
        ({"prompt": PROMPT, "colour": "red"}, "unknown field 'colour'"),
        ({"prompt": PROMPT, "target": TARGET, "seed": "x"}, "seed"),
        ({"prompt": PROMPT, "target": TARGET, "k": "a"}, "'k': 'a' is not of type 'number'"),
        ({"target": TARGET}, "'prompt' must be text"),
        ({"prompt": PROMPT, "target": TARGET, "invert": "direct"}, "give 'image'"),
        ({"prompt": PROMPT, "target": TARGET, "image": "p.png", "fit": "stretch"}, "fit one of"),
    ],
)
def test_a_bad_manifest_line_names_its_line(data, message):
    with pytest.raises(Clp2pError, match=f"manifest line 7: .*{message}"):
        manifest_item(7, data, SETTINGS, "shapes")
