import os

import pytest
import torch

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
A_ROOT = "a red circle on a white background"  # the fake window's root prompt
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def tiny_engine():
    from clp2p.engine.engine import Engine
    from clp2p.engine.loading import choose_device
    from tiny import tiny_pipeline

    return Engine(tiny_pipeline(), choose_device("cpu", "fp32"), name="tiny")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    from tiny import save_tiny

    return save_tiny(tmp_path_factory.mktemp("models") / "tiny-sd")


@pytest.fixture
def loop(qapp):
    """A qasync event loop over the test QApplication (the studio's asyncio loop)."""
    import asyncio

    import qasync

    event_loop = qasync.QEventLoop(qapp, already_running=False)
    asyncio.set_event_loop(event_loop)
    yield event_loop
    event_loop.close()
    asyncio.set_event_loop(None)


@pytest.fixture
def window(qtbot, tmp_path, loop):
    """The main window over the scriptable fake engine, on a one-root session, model loaded."""
    from PySide6.QtCore import QSettings

    from clp2p.model.session import Session
    from clp2p.model.settings import RenderSettings
    from clp2p_studio.document import Document
    from clp2p_studio.settings import StudioSettings
    from clp2p_studio.window import MainWindow
    from fake_backend import FakeBackend

    settings = StudioSettings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    w = MainWindow(FakeBackend(steps=4), settings, tmp_path / "data")
    w.confirm = lambda question: True
    qtbot.addWidget(w)
    w.set_document(Document(Session.new(A_ROOT, RenderSettings(steps=4), "shapes")))
    loop.run_until_complete(w.engine_jobs.load_model())
    yield w
    w.jobs.shutdown()
