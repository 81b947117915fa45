"""Fixtures for the reward tests: a tiny random open_clip model saved to a local checkpoint.

Nothing is downloaded: the model config is registered with ``open_clip.add_model_config`` and
its random weights are saved to a temporary file that is passed as ``pretrained``.
"""

from __future__ import annotations

import json

import pytest
import torch

TINY_CLIP = "diffalign-test-tiny-clip"
TINY_EMBED_DIM = 16
TINY_CONFIG = {
    "embed_dim": TINY_EMBED_DIM,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory):
    """(model_name, checkpoint_path) of a tiny random CLIP registered with open_clip."""
    open_clip = pytest.importorskip("open_clip")
    directory = tmp_path_factory.mktemp("tiny-clip")
    config = directory / f"{TINY_CLIP}.json"
    config.write_text(json.dumps(TINY_CONFIG))
    open_clip.add_model_config(config)
    torch.manual_seed(0)
    model = open_clip.create_model(TINY_CLIP)
    weights = directory / "open_clip_pytorch_model.bin"
    torch.save(model.state_dict(), weights)
    return TINY_CLIP, weights


@pytest.fixture
def hub_offline(monkeypatch, tmp_path):
    """Force Hugging Face hub offline mode with an empty cache, whatever the environment says."""
    constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    return tmp_path
