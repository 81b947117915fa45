"""FSDP2 sharding (train.sharding: fsdp): 2 processes (gloo, CPU) train like 1 process with doubled
accumulation, and each process holds about half of the weights, gradients' parameters and AdamW state."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from .conftest import tiny_raw

ROOT = Path(__file__).resolve().parents[2]


def _env(**extra):
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT), **extra}


def _config(tmp_path, name, full, accumulation, sharding):
    """LoRA: RWR. Full: Flow-DPO with gradient checkpointing, so the frozen reference copy is sharded too
    and checkpointed blocks recompute under FSDP."""
    path = tmp_path / f"{name}.yaml"
    method, model = ("flow_dpo", {"full_finetune": True, "gradient_checkpointing": True}) if full else ("rwr", {})
    path.write_text(yaml.safe_dump(tiny_raw(method, model=model,
                                            train={"max_steps": 2, "gradient_accumulation_steps": accumulation, "sharding": sharding})))
    return str(path)


def _torchrun(*args, env=None):
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", *args],
                          env=env or _env(), capture_output=True, text=True)


def _final(directory, full):
    from safetensors.torch import load_file

    if full:
        return load_file(str(Path(directory) / "final" / "transformer" / "diffusion_pytorch_model.safetensors"))
    return load_file(str(Path(directory) / "final" / "pytorch_lora_weights.safetensors"))


def _train(config, directory, *extra, processes=1, nodes=False):
    """Run ``diffalign train``: one process, 2 processes (torchrun), or 2 "nodes" of one process each that
    meet through torchrun's c10d rendezvous on localhost (what a multi-node launch does)."""
    command = ["-m", "diffalign", "train", config, "--output-dir", str(directory), *extra]
    if processes == 1:
        return subprocess.run([sys.executable, *command], env=_env(), capture_output=True, text=True)
    if not nodes:
        return _torchrun(*command)
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc_per_node", "1", "--rdzv_backend",
              "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}", "--rdzv_id", "diffalign-test"]
    runs = [subprocess.Popen(launch + command, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(2)]
    outs = [run.communicate(timeout=300) for run in runs]
    code = max(run.returncode for run in runs)
    return subprocess.CompletedProcess(launch, code, "".join(o[0] for o in outs), "".join(o[1] for o in outs))


@pytest.mark.slow
@pytest.mark.parametrize("full", [False, True], ids=["lora-2to1", "full-1to2-nnodes"])
def test_sharded_steps_match_one_process_with_doubled_accumulation_across_resumes(tmp_path, full):
    """The uninterrupted reference: 1 process, accumulation 2. LoRA (RWR): step 1 sharded on 2 processes,
    then resumed on 1 process unsharded (2 -> 1). Full FT (Flow-DPO, reference copy, gradient checkpointing):
    step 1 on 1 process, then resumed sharded on 2 "nodes" joined by a localhost rendezvous (1 -> 2)."""
    single = _train(_config(tmp_path, "one", full, 2, "none"), tmp_path / "one")
    assert single.returncode == 0, single.stderr[-2000:]
    legs = [(2, "fsdp", 1), (1, "none", 2)] if not full else [(1, "none", 2), (2, "fsdp", 1)]
    for leg, (processes, sharding, accumulation) in enumerate(legs):
        done = _train(_config(tmp_path, f"leg{leg}", full, accumulation, sharding), tmp_path / "legs",
                      *(["--max-steps", "1"] if leg == 0 else []), processes=processes, nodes=full)
        assert done.returncode == 0, done.stderr[-3000:]
        assert (f"on 2 processes" in done.stdout) == (processes == 2), done.stdout
    expected, got = _final(tmp_path / "one", full), _final(tmp_path / "legs", full)
    assert expected.keys() == got.keys() and expected
    import diffalign as da

    base = {} if not full else dict(da.load_model("digits-flow").network.state_dict())
    moved = max((expected[k] - base.get(k, torch.zeros_like(expected[k]) if "lora_B" in k else expected[k])).abs().max().item()
                for k in expected)
    assert moved > 0
    # Equal up to float summation order (FSDP's reduce-scatter vs one process's sum). AdamW divides each
    # element's update by that element's own gradient scale, so where a gradient is near zero, rounding noise
    # of ~1e-7 becomes an update difference of up to lr (1e-3) per step: atol 1e-5 (1% of one step's largest
    # move) for every element, and all but 0.1% of elements within 1e-6.
    worst, loose = 0.0, 0
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-5)
        diff = (got[key] - expected[key]).abs()
        worst, loose = max(worst, diff.max().item()), loose + int((diff > 1e-6).sum())
    assert loose <= 1e-3 * sum(v.numel() for v in expected.values()), (loose, worst)


def test_resume_refuses_a_changed_number_of_micro_batches_per_step(tiny_config, tmp_path):
    from diffalign.errors import DiffalignError
    from diffalign.trainers import get_trainer

    get_trainer("rwr")(tiny_config("rwr", train={"max_steps": 1}), tmp_path).train()
    other = get_trainer("rwr")(tiny_config("rwr", train={"max_steps": 2, "gradient_accumulation_steps": 2}), tmp_path)
    with pytest.raises(DiffalignError, match="gradient_accumulation_steps x processes"):
        other.train()


@pytest.mark.slow
@pytest.mark.parametrize("full", [True], ids=["full"])  # full FT: every weight trains (LoRA's shards: the equivalence test)
def test_each_process_holds_half_of_the_trainable_weights_and_optimizer_state(tmp_path, full):
    """Flow-DPO, full FT (reference copy sharded too, its shards offloaded to the host), gradient checkpointing,
    EMA (offloaded), 2 processes."""
    out = tmp_path / "probe"
    out.mkdir()
    config = tmp_path / "probe.yaml"
    config.write_text(yaml.safe_dump(tiny_raw("flow_dpo", model={"full_finetune": full, "gradient_checkpointing": True},
                                              train={"gradient_accumulation_steps": 1, "sharding": "fsdp", "ema_decay": 0.9,
                                                     "offload": ["reference", "ema"]})))
    done = _torchrun(str(Path(__file__).with_name("shard_probe.py")), str(config), str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    reports = [json.loads((out / f"rank-{r}.json").read_text()) for r in (0, 1)]
    for key in ("trainable", "weights", "optimizer"):
        total = reports[0][f"{key}_global"]
        assert sum(r[f"{key}_local"] for r in reports) == total  # the shards partition the tensors
        for r in reports:  # dim-0 chunks: half, give or take a row per tensor
            assert 0.4 * total <= r[f"{key}_local"] <= 0.6 * total, (key, r)
    assert reports[0]["optimizer_global"] == 2 * reports[0]["trainable_global"]
    # the memory plan's sharded figures are rank 0's shards exactly (dim-0 chunks of ceil(rows / P))
    from diffalign.trainers.memory_plan import architecture_of, network_params, plan_memory

    plan = plan_memory(network_params(architecture_of("digits-flow")[0], full_finetune=True), full_finetune=True,
                       needs_reference=True, ema=True, sharded=True, processes=2)
    assert plan.weights == 4 * reports[0]["weights_local"] and plan.gradients == 4 * reports[0]["trainable_local"]
    assert plan.optimizer == 4 * reports[0]["optimizer_local"] + 4 * len(list(architecture_of("digits-flow")[0].parameters()))
    # the clipping norm is the whole gradient's (one shard's would be ~30% smaller); 1e-4: fp32 sums in another order
    for r in reports:
        assert r["grad_norm_clip"] == pytest.approx(r["grad_norm_gathered"], rel=1e-4) and r["grad_norm_gathered"] > 0
    # train.offload: FSDP holds the reference's shards on the host (CPUOffloadPolicy), every unit
    assert all(r["reference_offload"] == ["CPUOffloadPolicy"] and r["reference_on_host"] for r in reports), reports
    # a sharded (DCP) checkpoint read back into the shards resumes bit for bit (weights, AdamW, EMA)
    assert reports[0]["resume_bit_exact"] and all(r["ema_bit_exact"] for r in reports), reports  # rank 0 gathers the weights


def test_accelerate_fsdp_config_is_refused_naming_train_sharding(tiny_config, tmp_path, monkeypatch, capsys):
    from diffalign.errors import DiffalignError
    from diffalign.trainers import get_trainer

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what 'accelerate launch --use_fsdp' sets
    with pytest.raises(DiffalignError, match="train.sharding=fsdp") as err:
        get_trainer("rwr")(tiny_config("rwr"), tmp_path)
    assert "\n" not in str(err.value)
    from diffalign.cli import main  # the CLI refuses before accelerate reads the config (on CPU: its own traceback)

    assert main(["train", _config(tmp_path, "cli", False, 1, "none"), "--output-dir", str(tmp_path / "run")]) == 2
    assert not (tmp_path / "run").exists()
    err = capsys.readouterr().err.strip()
    assert "train.sharding=fsdp" in err and err.count("\n") == 0, err
