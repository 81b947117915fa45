"""The memory plan (diffalign/trainers/memory_plan.py) against the real modules, the real trainer's tensors
and the memory glibc's allocator reports in use on CPU."""

import ctypes
import gc
from pathlib import Path

import pytest
import torch

import diffalign as da
from diffalign.trainers import get_trainer
from diffalign.trainers.memory_plan import (ARCHITECTURES, activation_bytes, architecture_of, build_on_meta, example_inputs,
                                            network_params, plan_memory, saved_activation_bytes, shard_numel)

ROOT = Path(__file__).resolve().parents[2]
TARGETS = ["to_q", "to_v"]


@pytest.mark.parametrize("name", ["digits-flow", "digits"])
@pytest.mark.parametrize("full", [False, True])
def test_parameter_counts_are_exact_against_the_real_module(name, full):
    from diffalign.models.lora import add_lora

    meta, _, _, _ = architecture_of(name)
    planned = {p.name: p for p in network_params(meta, full_finetune=full, lora_rank=3, lora_target_modules=TARGETS)}
    network = da.load_model(name).network
    network.requires_grad_(full)
    if not full:
        add_lora(network, 3, 3.0, TARGETS, seed=0)
    real = dict(network.named_parameters())
    assert sum(p.numel for p in planned.values()) == sum(p.numel() for p in real.values())
    assert sum(p.numel for p in planned.values() if p.trainable) == sum(p.numel() for p in real.values() if p.requires_grad)
    lora = {n: p for n, p in planned.items() if ".lora_" in n}
    assert bool(lora) == (not full)
    for n, p in lora.items():  # peft names them <layer>.lora_A.default.weight
        layer, kind = n.rsplit(".", 1)
        assert tuple(real[f"{layer}.{kind}.default.weight"].shape) == p.shape


def _bytes(tensors):
    return sum(t.numel() * t.element_size() for t in tensors)


@pytest.mark.parametrize("method,full,ema", [("flow_dpo", True, True), ("rwr", False, True), ("flow_dpo", False, False)])
def test_plan_equals_the_bytes_of_the_trainers_tensors(tiny_config, tmp_path, method, full, ema):
    config = tiny_config(method, model={"full_finetune": full}, train={"ema_decay": 0.9 if ema else 0.0, "max_steps": 1})
    trainer = get_trainer(method)(config, tmp_path)
    trainer.train_step()
    for p in trainer.params:  # the step zeroes gradients (set_to_none): give them back their planned size
        p.grad = torch.zeros_like(p)
    net = trainer.network
    planned = network_params(architecture_of("digits-flow")[0], full_finetune=full, lora_rank=config.model.lora_rank,
                             lora_target_modules=config.model.lora_target_modules)  # from config.json on meta
    plan = plan_memory(planned, full_finetune=full, needs_reference=trainer.needs_reference, ema=ema)
    state = [t for s in trainer.optimizer.optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
    assert plan.weights == _bytes(net.parameters())
    assert plan.gradients == _bytes(p.grad for p in trainer.params)
    assert plan.optimizer == _bytes(state)
    assert plan.reference == (_bytes(trainer.reference.network.parameters()) if trainer.reference is not None else 0)
    assert (trainer.reference is not None) == (full and trainer.needs_reference)
    assert plan.ema == (_bytes(trainer.ema.shadow_params) if ema else 0)


class _MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]


def _malloc_in_use() -> int:
    """Bytes glibc's malloc has handed out and not taken back (heap chunks + mmapped chunks): PyTorch's CPU
    allocator takes its memory from malloc, so a delta of this is a delta of tensor memory."""
    libc = ctypes.CDLL("libc.so.6")
    if not hasattr(libc, "mallinfo2"):
        pytest.skip("glibc >= 2.33 needed for mallinfo2")
    libc.mallinfo2.restype = _MallInfo2
    info = libc.mallinfo2()
    return info.uordblks + info.hblkhd


@pytest.mark.parametrize("name", ["digits-flow", "digits"])
@pytest.mark.parametrize("full", [True, False], ids=["full", "lora"])
def test_activation_estimate_is_within_20_percent_of_measured_memory(name, full):
    """Planned activations of 192 rows against the memory malloc hands out during a real forward pass
    (the graph then holds every saved tensor); for full FT the gradients' bytes count on both sides."""
    from diffalign.models.lora import add_lora
    from diffalign.trainers.memory_plan import with_lora

    meta, latent, tokens, _ = architecture_of(name)
    traced = meta if full else with_lora(meta, 4, TARGETS)
    estimate = activation_bytes(saved_activation_bytes(traced, example_inputs(meta, latent, tokens), train_all=full),
                                gradient_checkpointing=False)
    network = da.load_model(name).network.requires_grad_(full)
    if not full:
        add_lora(network, 4, 4.0, TARGETS, seed=0)
    rows = 192
    inputs = example_inputs(network, latent, tokens, batch=rows, device="cpu")
    gc.collect()
    before = _malloc_in_use()
    out = network(**inputs).sample  # the graph holds every saved activation until backward
    measured = _malloc_in_use() - before
    out.float().mean().backward()
    ratio = estimate * rows / measured
    print(f"{name} {'full' if full else 'LoRA'}: planned {estimate * rows / 2**20:.1f} MiB for {rows} rows, "
          f"measured {measured / 2**20:.1f} MiB, ratio {ratio:.3f}")
    assert 0.8 <= ratio <= 1.2, ratio


def test_gradient_checkpointing_lowers_the_activation_estimate():
    meta = build_on_meta(ARCHITECTURES["sd3-medium"].config)
    arch = ARCHITECTURES["sd3-medium"]
    trace = saved_activation_bytes(meta, example_inputs(meta, arch.latent, arch.text_tokens))
    full, ckpt = activation_bytes(trace, False), activation_bytes(trace, True)
    assert len(trace["blocks"]) == 24 and ckpt < full / 4
    assert activation_bytes(trace, False, "bf16") == full // 2


def test_sharding_divides_what_fsdp_divides():
    meta, _, _, _ = architecture_of("digits-flow")
    for full in (False, True):
        params = network_params(meta, full_finetune=full, lora_rank=2, lora_target_modules=TARGETS)
        one = plan_memory(params, full_finetune=full, needs_reference=True, ema=True)
        two = plan_memory(params, full_finetune=full, needs_reference=True, ema=True, sharded=True, processes=2)
        for key in ("weights", "gradients", "optimizer", "reference", "ema"):
            a, b = getattr(one, key), getattr(two, key)
            assert a / 2 <= b <= a / 2 + 4 * 1024 * (1 + len(params)), (key, a, b)  # half, plus dim-0 padding
        assert two.gathered > 0 and one.gathered == 0
    assert shard_numel((5, 3), 2) == 9 and shard_numel((4, 3), 2) == 6


@pytest.mark.parametrize("name,billions", [("sd3-medium", 2.0), ("flux.1-dev", 12.0), ("wan2.1-14b", 14.0)])
def test_published_architectures_have_their_published_sizes(name, billions):
    arch = ARCHITECTURES[name]
    total = sum(p.numel for p in network_params(build_on_meta(arch.config), full_finetune=True))
    assert abs(total / 1e9 - billions) / billions < 0.05, total


def test_plan_cli_prints_the_plan_and_refuses_bad_input(tmp_path, capsys, monkeypatch):
    from diffalign.cli import main

    monkeypatch.chdir(tmp_path)
    config = str(ROOT / "configs" / "flow_dpo_digits.yaml")
    assert main(["train", config, "--plan", "--num-processes", "2", "--device-memory", "1",
                 "model.full_finetune=true", "train.sharding=fsdp"]) == 0
    out = capsys.readouterr().out
    assert "* full, fsdp" in out and "2 process(es)" in out and not list(tmp_path.iterdir())  # nothing written
    for bad, key in ((["--num-processes", "0"], "--num-processes"), (["train.sharding=zero3"], "none, fsdp")):
        assert main(["train", config, "--plan", *bad]) == 2
        err = capsys.readouterr().err
        assert key in err and err.strip().count("\n") == 0, err
    assert main(["train", config, "--num-processes", "2", "--output-dir", "x"]) == 2  # --num-processes needs --plan
    assert "go with --plan" in capsys.readouterr().err
    assert main(["train", config, "--plan", "model.name=flux.1-dev", "--device-memory", "80"]) == 0  # published: meta only
    assert "11,901,408,320" in capsys.readouterr().out


def test_plan_of_train_offload_counts_what_the_trainer_leaves_on_the_device_and_the_host(tiny_config, tmp_path):
    """train.offload [reference, ema]: the plan's host bytes are the offloaded reference and EMA of the trainer,
    and its reference visit is what the trainer keeps resident (root parameters) plus its largest block."""
    from diffalign.trainers.sharding import block_modules

    config = tiny_config("flow_dpo", model={"full_finetune": True}, train={"ema_decay": 0.9, "offload": ["reference", "ema"]})
    trainer = get_trainer("flow_dpo")(config, tmp_path)
    ref = trainer.reference.network
    planned = network_params(architecture_of("digits-flow")[0], full_finetune=True)
    kept = plan_memory(planned, full_finetune=True, needs_reference=True, ema=True)
    plan = plan_memory(planned, full_finetune=True, needs_reference=True, ema=True, offload=("reference", "ema"))
    assert plan.reference == plan.ema == 0 and plan.ema_visit == kept.ema == _bytes(trainer.ema.shadow_params)
    assert plan.host == kept.reference + kept.ema == _bytes(ref.parameters()) + _bytes(trainer.ema.shadow_params)
    blocks = [block for _, block in block_modules(ref)]
    in_blocks = {id(p) for block in blocks for p in block.parameters()}
    resident = _bytes(p for p in ref.parameters() if id(p) not in in_blocks)  # the hooks never move these
    assert plan.reference_visit == resident + max(_bytes(block.parameters()) for block in blocks)
    assert plan.static == kept.static - kept.reference - kept.ema + plan.reference_visit


def test_plan_of_8bit_adamw_equals_the_bytes_of_bitsandbytes_state(tiny_config, tmp_path):
    """train.optimizer adamw8bit (bitsandbytes): the plan's optimizer bytes are those of the state tensors the
    trainer's AdamW8bit holds after a step (uint8 moments, absmax and maps on large tensors, fp32 on small)."""
    pytest.importorskip("bitsandbytes")
    config = tiny_config("rwr", model={"full_finetune": True}, train={"optimizer": "adamw8bit", "max_steps": 1})
    trainer = get_trainer("rwr")(config, tmp_path)
    trainer.train_step()
    distinct = {t.data_ptr(): t for s in trainer.optimizer.optimizer.state.values() for t in s.values() if torch.is_tensor(t)}
    state = list(distinct.values())  # the quantisation maps are one tensor shared by every parameter's state
    assert any(t.dtype == torch.uint8 for t in state)  # 8-bit moments on the large tensors
    planned = network_params(architecture_of("digits-flow")[0], full_finetune=True)
    plan = plan_memory(planned, full_finetune=True, needs_reference=False, ema=False, optimizer_kind="adamw8bit")
    adamw = plan_memory(planned, full_finetune=True, needs_reference=False, ema=False)
    assert plan.optimizer == _bytes(state)
    assert plan.optimizer < 0.4 * adamw.optimizer
