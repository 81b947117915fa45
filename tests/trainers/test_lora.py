"""A trained LoRA saved by diffalign reproduces the trained model in stock diffusers code."""

import json

import pytest
import torch

import diffalign as da
from diffalign.errors import DiffalignError
from diffalign.models.lora import WEIGHT_NAME, add_lora, save_lora


def _trained(name):
    model = da.load_model(name)
    add_lora(model.network, rank=4, alpha=2.0, target_modules=["to_q", "to_k", "to_v", "to_out.0"], seed=0)
    with torch.no_grad():  # stands in for training: alpha != rank, so a lost scaling would show
        for n, p in model.network.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.1)
    return model


def _stock_pipeline(name, network):
    from diffusers import DDPMScheduler, FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline, StableDiffusionPipeline

    if name == "digits-flow":
        return StableDiffusion3Pipeline(transformer=network, scheduler=FlowMatchEulerDiscreteScheduler(), vae=None,
                                        text_encoder=None, tokenizer=None, text_encoder_2=None, tokenizer_2=None,
                                        text_encoder_3=None, tokenizer_3=None)
    return StableDiffusionPipeline(vae=None, text_encoder=None, tokenizer=None, unet=network, scheduler=DDPMScheduler(),
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)


@pytest.mark.parametrize("name", ["digits-flow", "digits"])
def test_saved_lora_reproduces_the_model_in_a_fresh_network_and_a_stock_pipeline(tmp_path, name):
    trained = _trained(name)
    save_lora(trained.network, tmp_path)
    x, t = torch.randn(3, *trained.shape), torch.rand(3)
    with torch.no_grad():
        expected = trained(x, t)
        base = da.load_model(name)(x, t)
        assert (expected - base).abs().max() > 1e-2  # the adapter matters

        fresh = da.load_model(name, lora=tmp_path)  # diffalign's loader
        torch.testing.assert_close(fresh(x, t), expected, rtol=0, atol=1e-6)

        network = da.load_model(name).network  # the network's own load_lora_adapter, via a stock pipeline
        _stock_pipeline(name, network).load_lora_weights(str(tmp_path))
        stock = da.load_model(name)
        stock.network = network
        torch.testing.assert_close(stock(x, t), expected, rtol=0, atol=1e-6)


def test_lora_file_keys_carry_the_pipeline_prefix(tmp_path):
    from safetensors import safe_open

    save_lora(_trained("digits-flow").network, tmp_path)
    with safe_open(str(tmp_path / WEIGHT_NAME), "pt") as f:
        keys = list(f.keys())
        metadata = json.loads(f.metadata()["lora_adapter_metadata"])
    assert keys and all(k.startswith("transformer.") for k in keys)
    # rank and alpha travel with the weights (alpha != rank: a loader that lost them would rescale the update)
    assert metadata["transformer.r"] == 4 and metadata["transformer.lora_alpha"] == 2.0


def test_a_lora_without_the_prefix_is_refused_not_silently_ignored(tmp_path):
    model = _trained("digits-flow")
    model.network.save_lora_adapter(str(tmp_path), weight_name=WEIGHT_NAME)  # un-prefixed keys
    with pytest.raises(DiffalignError, match="no-op"):
        da.load_model("digits-flow", lora=tmp_path)


def test_missing_or_corrupt_lora_is_one_clear_error(tmp_path):
    with pytest.raises(DiffalignError, match="no LoRA weights"):
        da.load_model("digits-flow", lora=tmp_path)
    (tmp_path / WEIGHT_NAME).write_bytes(b"garbage")
    with pytest.raises(DiffalignError, match="corrupt LoRA file"):
        da.load_model("digits-flow", lora=tmp_path)
