"""Checkpoints are not trusted (issue 22, runs and files 2 and 5) and NaN never becomes saved weights.

Each test failed before its fix: an edited step, a stray file, a path out of the checkpoint or a
malformed state.json was accepted or failed with a bare KeyError (exit 1); NaN weights were saved
with exit 0; a NaN loss was stepped into the weights.
"""

import json
import math

import pytest
import torch

from diffalign.errors import DiffalignError
from diffalign.trainers import checkpoint as ckpt
from diffalign.trainers import get_trainer


def _save(root, step=2, weight=None):
    w = torch.nn.Parameter(torch.ones(3) if weight is None else weight)
    opt = torch.optim.AdamW([w], lr=0.1)
    w.grad = torch.ones(3)
    opt.step()
    return ckpt.save_checkpoint(root, step, trainable={"w": w.detach()}, optimizer=opt.state_dict(), scheduler={"last_epoch": step},
                                ema=None, extra={}, keep=2)


def _edit(directory, change, rehash=True):
    path = directory / ckpt.STATE_FILE
    state = json.loads(path.read_text())
    change(state)
    if rehash and getattr(ckpt, "STATE_HASH", None) in state:  # getattr: the same edits run against older code
        state[ckpt.STATE_HASH] = ckpt._state_hash(state)
    path.write_text(json.dumps(state))


def test_a_saved_checkpoint_loads(tmp_path):
    state = ckpt.load_checkpoint(_save(tmp_path))
    assert state["step"] == 2 and state["trainable"]["w"].shape == (3,) and ckpt.STATE_HASH in json.loads(
        (tmp_path / "step-000002" / "state.json").read_text())


def test_an_edited_step_is_refused(tmp_path):
    directory = _save(tmp_path)
    _edit(directory, lambda s: s.update(step=7), rehash=False)
    with pytest.raises(DiffalignError, match="does not match its own hash"):
        ckpt.load_checkpoint(directory)
    _edit(directory, lambda s: s.update(step=7))  # hash recomputed: the directory name still disagrees
    with pytest.raises(DiffalignError, match="step 7 does not match the directory name step-000002"):
        ckpt.load_checkpoint(directory)


def test_the_file_list_must_match_the_directory(tmp_path):
    directory = _save(tmp_path)
    (directory / "extra.safetensors").write_bytes(b"x")
    with pytest.raises(DiffalignError, match="holds 'extra.safetensors'"):
        ckpt.load_checkpoint(directory)


def test_a_path_outside_the_checkpoint_is_refused(tmp_path):
    directory = _save(tmp_path)
    _edit(directory, lambda s: s["sha256"].update({"../../etc/hostname": "0" * 64}))
    with pytest.raises(DiffalignError, match="not a plain checkpoint file name"):
        ckpt.load_checkpoint(directory)


MALFORMED = {
    "missing step": lambda s: s.pop("step"),
    "missing sha256": lambda s: s.pop("sha256"),
    "string step": lambda s: s.update(step="2"),
    "negative step": lambda s: s.update(step=-1),
    "python rng": lambda s: s.update(python_rng=[3, [1, 2], None]),
    "scheduler list": lambda s: s.update(scheduler=[1]),
    "sha256 list": lambda s: s.update(sha256=["trainable.safetensors"]),
    "only a step": lambda s: (s.clear(), s.update({"step": 2})),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_state_is_one_line_naming_the_file(tmp_path, case):
    directory = _save(tmp_path)
    _edit(directory, MALFORMED[case])
    with pytest.raises(DiffalignError) as info:
        ckpt.load_checkpoint(directory)
    assert str(directory / "state.json") in str(info.value) and "\n" not in str(info.value)


def test_a_bad_rng_state_is_one_line(tmp_path):
    state = ckpt.load_checkpoint(_save(tmp_path))
    state["rng"]["torch"] = torch.zeros(7, dtype=torch.uint8)
    with pytest.raises(DiffalignError, match="corrupt checkpoint RNG state"):
        ckpt.restore_rng(state["rng"], state["python_rng"], state["directory"])


def test_non_finite_weights_are_never_written_nor_resumed(tmp_path):
    with pytest.raises(DiffalignError, match="non-finite"):
        _save(tmp_path / "a", weight=torch.tensor([1.0, math.nan, 1.0]))
    assert ckpt.list_checkpoints(tmp_path / "a") == []
    # one written by an older version (or edited): refused at resume, with its hash consistent
    directory = _save(tmp_path / "b")
    ckpt._save_tensors({"w": torch.tensor([1.0, math.inf, 1.0])}, directory / "trainable.safetensors")
    _edit(directory, lambda s: s["sha256"].update({"trainable.safetensors": ckpt._sha256(directory / "trainable.safetensors")}))
    with pytest.raises(DiffalignError, match="non-finite"):
        ckpt.load_checkpoint(directory)


def _nan_from(trainer, first_bad_step, last_bad_step=10**9):
    compute = trainer.compute_loss

    def poisoned(batch, update):
        loss, metrics = compute(batch, update)
        if first_bad_step <= trainer.step <= last_bad_step:
            loss = loss * float("nan")
        return loss, metrics

    trainer.compute_loss = poisoned


def test_a_non_finite_loss_skips_the_update_and_training_goes_on(tiny_config, tmp_path, capsys):
    trainer = get_trainer("rwr")(tiny_config("rwr", train={"max_steps": 3}), tmp_path)
    _nan_from(trainer, 1, 1)  # the second step only
    trainer.train_step()
    before = trainer.trainable_state()
    metrics = trainer.train_step()
    after = trainer.trainable_state()
    assert metrics["skipped_updates"] == 1 and all(torch.equal(before[k], after[k]) for k in before)
    assert "non-finite loss or gradient, update skipped" in capsys.readouterr().err
    assert trainer.train()  # the third step trains; final weights written
    assert all(torch.isfinite(v).all() for v in trainer.trainable_state().values())


def test_repeated_non_finite_updates_stop_the_run_keeping_the_last_good_checkpoint(tiny_config, tmp_path):
    config = tiny_config("rwr", train={"max_steps": 8, "checkpoint_every": 1, "max_nonfinite_updates": 2})
    trainer = get_trainer("rwr")(config, tmp_path)
    _nan_from(trainer, 2)
    with pytest.raises(DiffalignError, match="2 updates in a row had a non-finite loss"):
        trainer.train()
    # step 3's update was skipped, so its checkpoint holds step 2's (finite) weights; step 4 stopped the run
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "checkpoints")] == [2, 3]
    assert not (tmp_path / "final").exists()
    state = ckpt.load_checkpoint(ckpt.list_checkpoints(tmp_path / "checkpoints")[-1][1])
    assert all(torch.isfinite(v).all() for v in state["trainable"].values())
