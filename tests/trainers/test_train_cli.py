"""`diffalign train`: presets, overrides, run directories, and one-line errors with exit code 2."""

from pathlib import Path

import pytest
import yaml

from diffalign.cli import main
from diffalign.trainers import load_config

from .conftest import tiny_raw

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_preset_loads(path):
    config = load_config(path)
    assert config.method in ("flow_dpo", "rwr", "grpo", "noisy_reward", "hypernoise")


def _write(tmp_path, raw) -> str:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_config_typo_is_one_line_naming_the_key(tmp_path, capsys):
    config = _write(tmp_path, tiny_raw("grpo"))
    err = _error(capsys, ["train", config, "--output-dir", str(tmp_path / "run"), "train.lerning_rate=1e-3"])
    assert "train.lerning_rate" in err and "train.learning_rate" in err


@pytest.mark.parametrize("override,expected", [
    ("train.max_steps=abc", "must be an integer"),
    ("train.mixed_precision=fp8", "valid choices: no, bf16, fp16"),
    ("log_prob_reduction=avg", "valid choices: mean, sum"),
    ("clip_range=-1", "'clip_range' must be > 0"),
    ("method=ppo", "valid choices: flow_dpo, grpo, hypernoise, noisy_reward, rwr"),
])
def test_bad_values_name_the_key_and_choices(tmp_path, capsys, override, expected):
    err = _error(capsys, ["train", _write(tmp_path, tiny_raw("grpo")), "--output-dir", str(tmp_path / "r"), override])
    assert expected in err


def test_unwritable_output_dir(tmp_path, capsys):
    (tmp_path / "a-file").write_text("x")
    err = _error(capsys, ["train", _write(tmp_path, tiny_raw("rwr")), "--output-dir", str(tmp_path / "a-file" / "run")])
    assert "not writable" in err


def test_missing_config_file(tmp_path, capsys):
    assert "does not exist" in _error(capsys, ["train", str(tmp_path / "nope.yaml"), "--output-dir", str(tmp_path)])


def test_rerun_resumes_overwrite_restarts_and_a_changed_config_is_refused(tmp_path, capsys):
    config = _write(tmp_path, tiny_raw("rwr", train={"max_steps": 1}))
    run = str(tmp_path / "run")
    assert main(["train", config, "--output-dir", run]) == 0
    capsys.readouterr()
    assert main(["train", config, "--output-dir", run, "--max-steps", "2"]) == 0  # extends the same run
    assert "to step 2" in capsys.readouterr().out
    assert main(["train", config, "--output-dir", run, "--max-steps", "2"]) == 0  # complete: says so, trains nothing
    assert "already at step 2" in capsys.readouterr().out
    err = _error(capsys, ["train", config, "--output-dir", run, "temperature=5"])
    assert "temperature=1.0" in err and "--overwrite" in err
    assert main(["train", config, "--output-dir", run, "temperature=5", "--overwrite"]) == 0
    assert "to step 1" in capsys.readouterr().out


def test_corrupt_checkpoint_is_an_error_naming_the_file(tmp_path, capsys):
    config = _write(tmp_path, tiny_raw("rwr", train={"max_steps": 1}))
    run = tmp_path / "run"
    assert main(["train", config, "--output-dir", str(run)]) == 0
    weights = run / "checkpoints" / "step-000001" / "trainable.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0xFF  # one flipped bit pattern in the tensor data: safetensors alone would not notice
    weights.write_bytes(bytes(data))
    capsys.readouterr()
    err = _error(capsys, ["train", config, "--output-dir", str(run), "--max-steps", "2"])
    assert str(weights) in err


def test_a_foreign_non_empty_directory_is_refused(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "precious.txt").write_text("keep me")
    err = _error(capsys, ["train", _write(tmp_path, tiny_raw("rwr")), "--output-dir", str(tmp_path / "run")])
    # the message must not invite --overwrite onto someone's files (issue 22)
    assert "holds no diffalign run" in err and "pass --overwrite" not in err and (tmp_path / "run" / "precious.txt").exists()


def test_show_config_lists_every_key_with_help(capsys):
    assert main(["train", "grpo", "--show-config"]) == 0
    out = capsys.readouterr().out
    for key in ("train.learning_rate", "model.lora_rank", "reward.options", "clip_range", "log_prob_reduction"):
        assert key in out


def test_sample_with_a_trained_lora(tmp_path, capsys):
    config = _write(tmp_path, tiny_raw("grpo", train={"max_steps": 1}))
    assert main(["train", config, "--output-dir", str(tmp_path / "run")]) == 0
    capsys.readouterr()
    out = tmp_path / "s.png"
    assert main(["sample", "--model", "digits-flow", "--lora", str(tmp_path / "run" / "final"), "--num-samples", "2",
                 "--steps", "3", "--out", str(out)]) == 0
    assert out.is_file()
    # issue 22, newcomer 4: the run directory stands for its final/ (failed before: "no LoRA weights")
    assert main(["sample", "--model", "digits-flow", "--lora", str(tmp_path / "run"), "--num-samples", "2",
                 "--steps", "3", "--out", str(out)]) == 0


@pytest.mark.parametrize("override,message", [("train.lerning_rate=1", "unknown config key 'train.lerning_rate' "
                                                                       "(did you mean 'train.learning_rate'?)"),
                                               # issue 22, newcomer 7: a typo got no hint
                                               ("num_inference_step=5", "unknown config key 'num_inference_step' "
                                                                        "(did you mean 'sample_steps'?)"),
                                               ("learning_rate=1", "(did you mean 'train.learning_rate'?)"),
                                               ("method=ppo", "valid choices: flow_dpo, grpo, hypernoise, noisy_reward, rwr"),
                                               # issue 22, newcomer 1: failed before (found after torch loaded, config.yaml left behind)
                                               ("reward.name=digt", "unknown reward (config key 'reward.name') 'digt'"),
                                               ("reward.options={targt: 3}", "unknown option(s) targt for reward 'digit'")])
def test_config_errors_are_refused_before_torch_is_imported(tmp_path, override, message):
    from tests.test_cli_fast import run_fresh

    code, _, err, heavy = run_fresh("train", _write(tmp_path, tiny_raw("grpo")), "--output-dir", str(tmp_path / "r"), override)
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert heavy == "", f"config validation imported {heavy}"
    assert not (tmp_path / "r").exists()  # nothing written, so the corrected command is not refused
