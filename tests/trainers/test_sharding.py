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


@pytest.mark.slow
@pytest.mark.parametrize("full", [False, True], ids=["lora", "full"])
def test_sharded_two_processes_match_one_process_with_doubled_accumulation(tmp_path, full):
    single = subprocess.run([sys.executable, "-m", "diffalign", "train", _config(tmp_path, "one", full, 2, "none"),
                             "--output-dir", str(tmp_path / "one")], env=_env(), capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-2000:]
    legs = [["--max-steps", "1"], []] if not full else [[]]  # LoRA: stop after step 1, then resume from that checkpoint
    for leg in legs:
        double = _torchrun("-m", "diffalign", "train", _config(tmp_path, "two", full, 1, "fsdp"), "--output-dir",
                           str(tmp_path / "two"), *leg)
        assert double.returncode == 0, double.stderr[-3000:]
    assert "on 2 processes" in double.stdout
    expected, got = _final(tmp_path / "one", full), _final(tmp_path / "two", full)
    assert expected.keys() == got.keys() and expected
    import diffalign as da

    base = {} if not full else dict(da.load_model("digits-flow").network.state_dict())
    moved = max((expected[k] - base.get(k, torch.zeros_like(expected[k]) if "lora_B" in k else expected[k])).abs().max().item()
                for k in expected)
    assert moved > 0
    # Equal up to float summation order (FSDP's reduce-scatter vs one all-reduce). AdamW divides each element's
    # update by that element's own gradient scale, so where a gradient is near zero, rounding noise of ~1e-7
    # becomes an update difference of up to lr (1e-3) per step: atol 1e-5 (1% of one step's largest move)
    # for every element, and all but 0.1% of elements within 1e-6.
    worst, loose = 0.0, 0
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-5)
        diff = (got[key] - expected[key]).abs()
        worst, loose = max(worst, diff.max().item()), loose + int((diff > 1e-6).sum())
    assert loose <= 1e-3 * sum(v.numel() for v in expected.values()), (loose, worst)


@pytest.mark.slow
@pytest.mark.parametrize("full", [True], ids=["full"])  # full FT: every weight trains (LoRA's shards: the equivalence test)
def test_each_process_holds_half_of_the_trainable_weights_and_optimizer_state(tmp_path, full):
    out = tmp_path / "probe"
    out.mkdir()
    done = _torchrun(str(Path(__file__).with_name("shard_probe.py")), _config(tmp_path, "probe", full, 1, "fsdp"), str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    reports = [json.loads((out / f"rank-{r}.json").read_text()) for r in (0, 1)]
    for key in ("trainable", "weights", "optimizer"):
        total = reports[0][f"{key}_global"]
        assert sum(r[f"{key}_local"] for r in reports) == total  # the shards partition the tensors
        for r in reports:  # dim-0 chunks: half, give or take a row per tensor
            assert 0.4 * total <= r[f"{key}_local"] <= 0.6 * total, (key, r)
    assert reports[0]["optimizer_global"] == 2 * reports[0]["trainable_global"]


def test_accelerate_fsdp_config_is_refused_naming_train_sharding(tiny_config, tmp_path, monkeypatch):
    from diffalign.errors import DiffalignError
    from diffalign.trainers import get_trainer

    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")  # what 'accelerate launch --use_fsdp' sets
    with pytest.raises(DiffalignError, match="train.sharding=fsdp") as err:
        get_trainer("rwr")(tiny_config("rwr"), tmp_path)
    assert "\n" not in str(err.value)
