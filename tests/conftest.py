import os

import pytest
import torch

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
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
