"""Model loading from local files and the local Hugging Face cache, and device choice."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from clp2p.engine.engine import Engine
from clp2p.engine.loading import _V2_KEY, _single_file_config, choose_device
from clp2p.errors import Clp2pError
from clp2p.model.settings import RenderSettings
from clp2p.resources import resources_dir

SETTINGS = RenderSettings(seed=0, steps=2, guidance=5.0, width=32, height=32)


def test_folder_and_hub_cache_load_the_same_model(tiny_model_dir, tmp_path, monkeypatch):
    from_folder = Engine.load(str(tiny_model_dir), "cpu", "fp32")
    snapshot = tmp_path / "hub" / "models--someone--tiny-sd" / "snapshots" / "0123abc"
    shutil.copytree(tiny_model_dir, snapshot)
    (tmp_path / "hub" / "models--someone--tiny-sd" / "refs").mkdir()
    (tmp_path / "hub" / "models--someone--tiny-sd" / "refs" / "main").write_text("0123abc")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    from_cache = Engine.load("someone/tiny-sd", "cpu", "fp32")
    a = from_folder.generate("a red circle", SETTINGS).images[0]
    b = from_cache.generate("a red circle", SETTINGS).images[0]
    assert np.array_equal(a, b)


def test_v_prediction_model_renders_edits(tmp_path):
    from tiny import save_tiny

    engine = Engine.load(str(save_tiny(tmp_path / "v", "v_prediction")), "cpu", "fp32")
    assert engine.pipe.scheduler.config.prediction_type == "v_prediction"
    src = "a red circle on a white background"
    result = engine.edit(src, [(src.replace("red", "blue"), engine_params())], SETTINGS)
    assert len(result.images) == 2 and not np.array_equal(result.images[0], result.images[1])


def engine_params():
    from clp2p.model.presets import preset

    return preset("cl-p2p")


def test_prediction_type_override_for_folders(tiny_model_dir):
    engine = Engine.load(str(tiny_model_dir), "cpu", "fp32", prediction_type="v_prediction")
    assert engine.scheduler().config.prediction_type == "v_prediction"


@pytest.mark.parametrize(
    "width, step, override, expected",
    [
        (768, None, None, "sd15"),
        (1024, None, None, "sd21"),
        (1024, 875000, None, "sd2-base"),
        (1024, None, "epsilon", "sd2-base"),
    ],
)
def test_single_file_config_choice(tmp_path, width, step, override, expected):
    path = tmp_path / "model.safetensors"
    if step is None:
        save_file({_V2_KEY: torch.zeros(4, width)}, str(path))
    else:
        path = tmp_path / "model.ckpt"
        torch.save({"global_step": step, "state_dict": {_V2_KEY: torch.zeros(4, width)}}, path)
    config = _single_file_config(path, override)
    assert config == resources_dir() / "configs" / expected
    assert (config / "model_index.json").is_file()


def test_single_file_that_is_not_sd_is_rejected(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(2)}, str(path))
    with pytest.raises(Clp2pError, match="not a Stable Diffusion"):
        Engine.load(str(path), "cpu", "fp32")


def test_device_choice():
    assert choose_device("cpu", None).dtype == torch.float32
    assert choose_device("auto", "auto").device.type in ("cpu", "cuda", "mps")
    with pytest.raises(Clp2pError, match="fp16 is not supported on the CPU"):
        choose_device("cpu", "fp16")
    with pytest.raises(Clp2pError, match="dtype 'fp8' is unknown"):
        choose_device("cpu", "fp8")
    with pytest.raises(Clp2pError, match="device 'tpu' is unknown"):
        choose_device("tpu", None)
    if not torch.cuda.is_available():
        with pytest.raises(Clp2pError, match="no CUDA GPU"):
            choose_device("cuda", None)
