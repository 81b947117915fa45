"""train.offload: the frozen reference's blocks and the EMA shadows wait on the host and visit the device only
for their use; the numbers are those of a run without offload, bit for bit."""

import pytest
import torch
from safetensors.torch import load_file

from diffalign.errors import DiffalignError
from diffalign.trainers import get_trainer
from diffalign.trainers.offload import HOST
from diffalign.trainers.sharding import block_modules


def _spy_moves(holder, log, label):
    """Record every ``.to(device)`` of ``holder`` (the real move still happens)."""
    real = holder.to

    def to(*args, **kwargs):
        device = kwargs.get("device", args[0] if args else None)
        log.append((label, torch.device(device).type))
        return real(*args, **kwargs)

    holder.to = to


def _train(tiny_config, tmp_path, offload, spy=False):
    config = tiny_config("flow_dpo", model={"full_finetune": True},
                         train={"max_steps": 2, "ema_decay": 0.9, "offload": offload, "report_to": "none"})
    trainer = get_trainer("flow_dpo")(config, tmp_path)
    log = []
    if spy:
        for name, block in block_modules(trainer.reference.network):
            _spy_moves(block, log, name)
        _spy_moves(trainer.ema, log, "ema")
    trainer.train()
    return trainer, log, load_file(str(tmp_path / "final" / "transformer" / "diffusion_pytorch_model.safetensors"))


def test_offloaded_reference_and_ema_live_on_the_host_visit_the_device_per_use_and_change_no_number(tiny_config, tmp_path):
    plain, quiet, expected = _train(tiny_config, tmp_path / "plain", [])
    offloaded, log, got = _train(tiny_config, tmp_path / "offloaded", ["reference", "ema"], spy=True)
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    device = offloaded.accelerator.device.type
    blocks = [name for name, _ in block_modules(offloaded.reference.network)]
    assert blocks
    # each reference pass: every block visits the device for its own forward, then goes back to the host
    for name in blocks:
        moves = [where for label, where in log if label == name]
        assert moves and moves == [device, "cpu"] * (len(moves) // 2), (name, moves)
    # the EMA: one visit per optimizer step (2 steps)
    assert [where for label, where in log if label == "ema"] == [device, "cpu"] * 2
    # between uses everything named lives on the host
    for _, block in block_modules(offloaded.reference.network):
        assert all(p.device == HOST for p in block.parameters())
    assert all(t.device == HOST for t in offloaded.ema.shadow_params)
    # without the option nothing moves: the spy would have nothing to record, and the hooks are absent
    assert not any(block._forward_pre_hooks for _, block in block_modules(plain.reference.network))


def test_offload_names_only_reference_or_ema(tiny_config):
    with pytest.raises(DiffalignError, match=r"'train.offload' holds 'optimizer'; valid choices: reference, ema"):
        tiny_config("rwr", train={"offload": ["optimizer"]}).validate()
