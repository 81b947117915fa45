"""Tiny SD1.5-style and SD3-style pipelines (with CLIP text encoders and a VAE), saved once per session."""

from __future__ import annotations

import pytest

from . import tiny


@pytest.fixture(scope="session")
def sd_dir(tmp_path_factory):
    """A saved SD1.5-style pipeline directory: unet, DDIM scheduler, vae, text_encoder, tokenizer."""
    root = tmp_path_factory.mktemp("tiny-sd")
    tiny.sd_pipeline(root / "files").save_pretrained(root / "pipe")
    return root / "pipe"


@pytest.fixture(scope="session")
def sd_pipe(sd_dir):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(sd_dir)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def sd3_pipe(tmp_path_factory):
    pipe = tiny.sd3_pipeline(tmp_path_factory.mktemp("tiny-sd3"))
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def bare_sd_dir(tmp_path_factory):
    """A pipeline directory without text encoder or tokenizer (unet, scheduler, vae)."""
    root = tmp_path_factory.mktemp("tiny-sd-bare")
    tiny.sd_pipeline(with_text=False).save_pretrained(root)
    return root


from tests.rewards.conftest import tiny_clip  # noqa: E402,F401  (a tiny random open_clip checkpoint)
