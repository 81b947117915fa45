"""Sharded checkpoints (sharded_checkpoint.py, DCP): the format and its checks in one process, and, with 2
processes under torchrun (gloo, CPU), a SIGKILL mid-run then resume that is bit-exact."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from diffalign.errors import DiffalignError
from diffalign.trainers import checkpoint as ckpt
from diffalign.trainers.sharded_checkpoint import (is_sharded_checkpoint, load_sharded_checkpoint, read_sharded_tensors,
                                                   save_sharded_checkpoint)

from .conftest import tiny_raw
from .test_sharding import _env, _final


def _tensors(seed):
    g = torch.Generator().manual_seed(seed)
    return {"trainable/w": torch.randn(5, 3, generator=g), "optimizer/w/step": torch.tensor(7.0),
            "optimizer/w/exp_avg": torch.randn(5, 3, generator=g)}


def test_a_sharded_checkpoint_is_hashed_file_by_file_and_reads_back_bit_for_bit(tmp_path):
    saved = _tensors(0)
    target = save_sharded_checkpoint(tmp_path, 3, tensors=saved, param_groups=[{"lr": 1e-3, "betas": [0.9, 0.999]}],
                                     scheduler={"last_epoch": 3}, extra={"data_position": 3}, keep=2)
    assert target == tmp_path / "step-000003" and is_sharded_checkpoint(target)
    assert not list(tmp_path.glob(".step-*"))  # the temporary directory was renamed into place
    state = json.loads((target / "state.json").read_text())
    assert state["format"] == "dcp" and set(state["sha256"]) == {"shards/__0_0.distcp", "shards/.metadata", "rng.safetensors"}
    assert state["extra"]["param_groups"][0]["lr"] == 1e-3
    loaded = load_sharded_checkpoint(target)
    assert loaded["step"] == 3 and loaded["extra"]["data_position"] == 3
    into = {k: torch.zeros_like(v) for k, v in saved.items()}
    read_sharded_tensors(target, into)
    assert all(torch.equal(into[k], saved[k]) for k in saved)
    # a second save of the same step is skipped; older checkpoints are pruned to `keep`
    assert save_sharded_checkpoint(tmp_path, 3, tensors=saved, param_groups=[], scheduler={}, extra={}, keep=2) is None
    for step in (4, 5):
        save_sharded_checkpoint(tmp_path, step, tensors=saved, param_groups=[], scheduler={}, extra={}, keep=2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [4, 5]


def test_a_corrupt_or_foreign_shard_file_is_one_line_naming_it(tmp_path):
    target = save_sharded_checkpoint(tmp_path, 1, tensors=_tensors(0), param_groups=[], scheduler={}, extra={}, keep=2)
    shard = target / "shards" / "__0_0.distcp"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(DiffalignError, match=r"corrupt checkpoint file .*__0_0\.distcp \(missing or checksum mismatch\)") as err:
        load_sharded_checkpoint(target)
    assert "\n" not in str(err.value)
    other = save_sharded_checkpoint(tmp_path, 2, tensors=_tensors(1), param_groups=[], scheduler={}, extra={}, keep=2)
    (other / "shards" / "__1_0.distcp").write_bytes(b"not in the manifest")
    with pytest.raises(DiffalignError, match=r"holds 'shards/__1_0\.distcp', which its file list does not name"):
        load_sharded_checkpoint(other)
    with pytest.raises(DiffalignError, match="is sharded"):  # the unsharded reader refuses it in one line
        ckpt.load_checkpoint(target)
    # a checkpoint of another model: names that do not match are one line, not DCP's traceback
    third = save_sharded_checkpoint(tmp_path, 3, tensors=_tensors(2), param_groups=[], scheduler={}, extra={}, keep=3)
    with pytest.raises(DiffalignError, match="does not match this run's trainable parameters"):
        read_sharded_tensors(third, {"trainable/v": torch.zeros(5, 3)})


@pytest.mark.slow
def test_sigkill_mid_run_then_resume_under_sharding_is_bit_exact(tmp_path):
    """Flow-DPO full fine-tuning (reference copy sharded too) with EMA, 2 processes, checkpoints every step:
    SIGKILL of the whole job (launcher and workers) once step 2's checkpoint exists, then resume; the final
    weights equal those of an uninterrupted 2-process run bit for bit."""
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(tiny_raw("flow_dpo", model={"full_finetune": True},
                                              train={"max_steps": 5, "checkpoint_every": 1, "keep_checkpoints": 2,
                                                     "sharding": "fsdp", "ema_decay": 0.9, "report_to": "none"})))

    def launch(directory, **popen):
        return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "diffalign",
                                 "train", str(config), "--output-dir", str(directory)], env=_env(), **popen)

    straight = launch(tmp_path / "straight", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = straight.communicate(timeout=600)
    assert straight.returncode == 0, err[-3000:]
    with open(tmp_path / "killed.log", "w") as log:
        killed = launch(tmp_path / "killed", stdout=log, stderr=log, start_new_session=True)
        written = tmp_path / "killed" / "checkpoints" / "step-000002"
        deadline = time.time() + 300
        while not written.exists() and killed.poll() is None and time.time() < deadline:
            time.sleep(0.02)
        os.killpg(killed.pid, signal.SIGKILL)  # the launcher and both workers, no chance to clean up
        killed.wait()
    found = [s for s, _ in ckpt.list_checkpoints(tmp_path / "killed" / "checkpoints")]
    assert found and max(found) < 5, (found, (tmp_path / "killed.log").read_text()[-2000:])
    directory = ckpt.list_checkpoints(tmp_path / "killed" / "checkpoints")[-1][1]
    assert is_sharded_checkpoint(directory) and {p.name for p in (directory / "shards").iterdir()} == {
        "__0_0.distcp", "__1_0.distcp", ".metadata"}  # each rank wrote its own shards
    resumed = launch(tmp_path / "killed", stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err[-3000:]
    expected, got = _final(tmp_path / "straight", True), _final(tmp_path / "killed", True)
    assert expected.keys() == got.keys() and expected
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert not list((tmp_path / "killed" / "checkpoints").glob(".step-*"))  # a half-written one was cleaned up


@pytest.mark.slow
def test_a_checkpoint_of_2_sharded_processes_resumes_on_3_through_dcp_resharding(tmp_path):
    """RWR LoRA: step 1 sharded on 2 processes (accumulation 3), step 2 sharded on 3 (accumulation 2), against
    1 process with accumulation 6. DCP reads the 2-way shards into 3-way ones; the values read are those
    written, and the steps differ from one process only in summation order (the tolerance of test_sharding)."""
    from .test_sharding import _config

    def train(config, directory, processes, *extra):
        launch = [sys.executable] + (["-m", "torch.distributed.run", "--nproc_per_node", str(processes)] if processes > 1 else [])
        done = subprocess.run(launch + ["-m", "diffalign", "train", config, "--output-dir", str(directory), *extra],
                              env=_env(), capture_output=True, text=True)
        assert done.returncode == 0, done.stderr[-3000:]

    train(_config(tmp_path, "one", False, 6, "none"), tmp_path / "one", 1)
    train(_config(tmp_path, "two", False, 3, "fsdp"), tmp_path / "legs", 2, "--max-steps", "1")
    assert is_sharded_checkpoint(tmp_path / "legs" / "checkpoints" / "step-000001")
    train(_config(tmp_path, "three", False, 2, "fsdp"), tmp_path / "legs", 3)
    shards = {p.name for p in (tmp_path / "legs" / "checkpoints" / "step-000002" / "shards").iterdir()}
    assert shards == {"__0_0.distcp", "__1_0.distcp", "__2_0.distcp", ".metadata"}
    expected, got = _final(tmp_path / "one", False), _final(tmp_path / "legs", False)
    assert expected.keys() == got.keys() and expected
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-5)
