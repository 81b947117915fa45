"""The shipped `shapes` pipeline: stock diffusers loading and generation offline, and the diffalign paths."""

import os

import pytest
import torch

import diffalign as da
from diffalign.zoo import EMBEDDED

SHAPES_DIR = EMBEDDED["shapes"]


def test_shipped_directory_is_small_and_complete():
    files = [p for p in SHAPES_DIR.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 20 * 2**20
    for part in ("model_index.json", "unet/config.json", "vae/config.json", "text_encoder/config.json",
                 "tokenizer/vocab.json", "tokenizer/merges.txt", "scheduler/scheduler_config.json"):
        assert (SHAPES_DIR / part).is_file(), part


def test_stock_pipeline_class_alone_loads_and_generates_offline():
    from diffusers import StableDiffusionPipeline

    assert os.environ.get("HF_HUB_OFFLINE") == "1"
    pipe = StableDiffusionPipeline.from_pretrained(str(SHAPES_DIR))
    pipe.set_progress_bar_config(disable=True)
    out = pipe(["two red circles", "a blue square"], num_inference_steps=4, guidance_scale=3.0, output_type="pt",
               generator=torch.Generator().manual_seed(0))
    assert out.images.shape == (2, 3, 32, 32)
    assert torch.isfinite(out.images).all() and 0 <= out.images.min() and out.images.max() <= 1
    assert pipe.tokenizer.tokenize("two red circles") == ["two</w>", "red</w>", "circles</w>"]


def test_load_pipeline_returns_the_stock_pipeline():
    from diffusers import StableDiffusionPipeline

    pipe = da.load_pipeline("shapes")
    assert type(pipe) is StableDiffusionPipeline
    with pytest.raises(da.DiffalignError, match="pipeline"):
        da.load_pipeline("digits")


def test_load_model_and_sample_with_a_text_prompt():
    model = da.load_model("shapes")
    out = da.sample(model, None, sampler="ancestral", num_samples=2, steps=4, seed=0, cond="a red circle")
    assert out.samples.shape == (2, 4, 8, 8)
    images = model.decode(out.samples)
    assert images.shape == (2, 3, 32, 32)
    again = da.sample(model, None, sampler="ancestral", num_samples=2, steps=4, seed=0, cond="a red circle")
    assert torch.equal(out.samples, again.samples)
    other = da.sample(model, None, sampler="ancestral", num_samples=2, steps=4, seed=0, cond="four green squares")
    assert not torch.equal(out.samples, other.samples)
