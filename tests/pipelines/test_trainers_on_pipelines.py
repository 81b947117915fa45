"""The trainers run on saved SD1.5- and SD3-style pipeline directories with a text prompt as the
condition (``model.cond``), and their LoRA loads into the stock pipeline with ``load_lora_weights``."""

from __future__ import annotations

import pytest
import torch

from diffalign.trainers import config_from_dict, get_trainer
from tests.trainers.conftest import tiny_raw


@pytest.fixture(scope="module")
def pipeline_dirs(tmp_path_factory, sd_dir):
    from . import tiny

    root = tmp_path_factory.mktemp("sd3-dir")
    tiny.sd3_pipeline(root / "files").save_pretrained(root / "sd3")
    return {"sd": sd_dir, "sd3": root / "sd3"}


@pytest.mark.parametrize("method", ["grpo", "rwr", "flow_dpo"])
@pytest.mark.parametrize("family", ["sd", "sd3"])
def test_trainer_on_a_pipeline_directory_with_a_prompt(pipeline_dirs, tmp_path, family, method):
    raw = tiny_raw(method, str(pipeline_dirs[family]), reward={"name": "compressibility", "options": {}},
                   model={"cond": "a red square"})
    trainer = get_trainer(method)(config_from_dict(raw), tmp_path)
    before = [p.detach().clone() for p in trainer.params]
    trainer.train()
    assert all(not torch.equal(a, b) for a, b in zip(before, trainer.params))  # every LoRA parameter moved
    final = tmp_path / "final"
    assert (final / "pytorch_lora_weights.safetensors").is_file()
    if method != "grpo":
        return
    from diffusers import DiffusionPipeline

    absent = {} if family == "sd" else {"text_encoder_3": None, "tokenizer_3": None}  # saved without T5
    stock = DiffusionPipeline.from_pretrained(pipeline_dirs[family], **absent)
    stock.load_lora_weights(str(final))
    network = stock.unet if family == "sd" else stock.transformer
    x = torch.randn(1, 4, 8, 8)
    cond = trainer.model.encode_condition("a red square", 1)
    with torch.no_grad():
        ours = trainer.model(x, torch.tensor([0.5], dtype=torch.float64), cond)
        if family == "sd":
            theirs = network(x, trainer.model.schedule.model_timestep(torch.tensor([0.5])).float(), **cond).sample
        else:
            theirs = network(hidden_states=x, timestep=torch.tensor([500.0]), **cond).sample
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
