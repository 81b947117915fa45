"""Bad input from issue 22: refused with one line and exit 2, before anything is written.

Each case failed before its fix (noted per test).
"""

from pathlib import Path

import pytest

from diffalign.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
CONFIG = str(CONFIGS / "grpo_digits.yaml")


@pytest.mark.parametrize("override,key", [
    ("seed=-1", "seed"),
    ("train.adam_epsilon=-1", "train.adam_epsilon"),
    ("train.adam_beta2=1.5", "train.adam_beta2"),
    ("train.learning_rate=.inf", "train.learning_rate"),
    ("train.learning_rate=inf", "train.learning_rate"),
    ("model.lora_alpha=.inf", "model.lora_alpha"),
    ("advantage_eps=.nan", "advantage_eps"),
    ("advantage_eps=0", "advantage_eps"),
])
def test_bad_config_values_are_refused_before_anything_is_written(tmp_path, capsys, override, key):
    """Failed before: seed=-1, adam_epsilon=-1 and adam_beta2=1.5 failed only after config.yaml was
    written; learning_rate=inf, lora_alpha=inf and advantage_eps=nan trained and saved NaN weights."""
    out = tmp_path / "run"
    assert main(["train", CONFIG, "--output-dir", str(out), override]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and repr(key) in err, err
    assert not out.exists()


@pytest.mark.parametrize("argv,needle", [
    (["--cfg", "inf", "--cond", "3"], "--cfg"),
    (["--seed", str(2**64)], "--seed"),
    (["--seed", "-1"], "--seed"),
])
def test_bad_sample_numbers_are_one_line_exit_2(tmp_path, capsys, argv, needle):
    """Failed before: --cfg inf sampled NaN images, and a seed >= 2^64 raised from torch (exit 1)."""
    assert main(["sample", "--model", "digits", "--out", str(tmp_path / "x.png"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "x.png").exists()


def test_text_on_a_class_label_model_is_one_line_exit_2(tmp_path, capsys):
    """Newcomer 5. Failed before: TypeError, exit 1 (sample) and after torch loaded (train)."""
    assert main(["sample", "--model", "digits", "--prompt", "a cat", "--steps", "2", "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "class labels" in err and "'a cat'" in err, err
    assert main(["train", CONFIG, "--output-dir", str(tmp_path / "r"), "model.cond=cat"]) == 2
    err = capsys.readouterr().err.strip()
    assert "model.cond" in err and "class labels" in err and not (tmp_path / "r").exists()


def test_a_config_that_fails_to_build_writes_nothing(tmp_path, capsys):
    """Newcomer 1. Failed before: a reward option refused only when torch built the reward left
    config.yaml behind, so the corrected command was refused with 'pass --overwrite'."""
    out = tmp_path / "run"
    assert main(["train", CONFIG, "--output-dir", str(out), "reward.options={target: three}"]) == 2
    assert "target" in capsys.readouterr().err
    assert not out.exists()
