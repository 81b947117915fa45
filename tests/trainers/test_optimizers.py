"""train.optimizer: adamw8bit (bitsandbytes, optional) trains, resumes bit for bit, and is refused with fsdp."""

import pytest
import torch
from safetensors.torch import load_file

from diffalign.errors import DiffalignError
from diffalign.trainers import get_trainer


def test_8bit_adamw_is_refused_with_fsdp_in_one_line(tiny_config):
    with pytest.raises(DiffalignError, match="'train.optimizer: adamw8bit' and 'train.sharding: fsdp' exclude each other"):
        tiny_config("rwr", train={"optimizer": "adamw8bit", "sharding": "fsdp"}).validate()


def test_8bit_adamw_trains_and_resumes_bit_for_bit(tiny_config, tmp_path):
    pytest.importorskip("bitsandbytes")

    def final(directory, *stops):
        for stop in stops:  # each a fresh trainer: the later ones resume from the checkpoint
            config = tiny_config("rwr", model={"full_finetune": True}, train={"optimizer": "adamw8bit", "max_steps": 2})
            get_trainer("rwr")(config, directory).train(max_steps=stop)
        return load_file(str(directory / "final" / "transformer" / "diffusion_pytorch_model.safetensors"))

    straight, resumed = final(tmp_path / "straight", 2), final(tmp_path / "resumed", 1, 2)
    assert straight.keys() == resumed.keys() and all(torch.equal(straight[k], resumed[k]) for k in straight)
    import diffalign as da

    base = da.load_model("digits-flow").network.state_dict()
    assert any(not torch.equal(straight[k], base[k]) for k in straight)  # it trained
