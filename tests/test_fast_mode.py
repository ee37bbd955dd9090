"""Fast mode (all branches of a render in one batch) as a user option: the CLI's ``--batch``,
the studio's model dialog, kept in the settings and carried to the engine by each render."""

from __future__ import annotations

from PySide6.QtCore import QSettings

from clp2p.cli.main import build_parser
from clp2p.model.session import Session
from clp2p.model.settings import RenderSettings
from clp2p.workflows.service import FAST_MODE, EngineService, ModelSpec, RenderJob
from clp2p_studio.model_dialog import ModelDialog
from clp2p_studio.settings import StudioSettings


def test_the_dialog_and_the_settings_keep_fast_mode(qtbot, tmp_path):
    settings = StudioSettings(QSettings(str(tmp_path / "s.ini"), QSettings.Format.IniFormat))
    assert settings.model_spec.batch is False  # one branch per pass unless asked
    dialog = ModelDialog(settings.model_spec)
    qtbot.addWidget(dialog)
    assert dialog.fast.toolTip() == FAST_MODE and not dialog.fast.isChecked()
    dialog.fast.setChecked(True)
    settings.model_spec = dialog.spec()
    assert settings.model_spec.batch is True
    assert settings.model_spec.same_model(ModelSpec())  # switching it needs no reload


def test_a_render_job_carries_fast_mode_to_the_engine():
    service = EngineService()
    seen = []

    class Renderer:
        def spill_to(self, folder, limit):
            pass

        def render(self, session, node_id, images, **kwargs):
            seen.append(kwargs["options"].batch_branches)

    service.renderer = Renderer()
    session = Session.new("a red circle", RenderSettings(steps=2), "shapes")
    for batch in (False, True):
        service.render(RenderJob(session, "n1", {}, batch=batch))
    assert seen == [False, True]


def test_the_cli_offers_batch_with_its_trade_off():
    parser = build_parser()
    args = parser.parse_args(["session", "render", "s.json", "--batch"])
    assert args.batch is True
    assert not parser.parse_args(["session", "render", "s.json"]).batch
