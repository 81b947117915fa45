"""Files and signals (issue 22, runs and files 7 and 8). Each test failed before its fix (noted)."""

import os
import signal
import stat
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import diffalign.cli as cli
from diffalign.cli import main

CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "grpo_digits.yaml")


def _one_line(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_a_binary_config_is_exit_2(tmp_path, capsys):
    """Failed before: UnicodeDecodeError, exit 1."""
    config = tmp_path / "c.yaml"
    config.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00binary")
    assert "not UTF-8" in _one_line(capsys, ["train", str(config), "--output-dir", str(tmp_path / "r")])


def test_a_directory_given_as_the_config_is_called_a_directory(tmp_path, capsys):
    """Failed before: 'does not exist'."""
    assert "is a directory" in _one_line(capsys, ["train", str(tmp_path), "--output-dir", str(tmp_path / "r")])


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path, capsys):
    """Failed before: a 635-byte alias bomb in reward.options grew memory without bound."""
    lines = ["method: grpo", "reward:", "  name: digit", "  options:", "    target: 3",
             '    a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 9):
        lines.append(f"    a{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 9) + "]")
    config = tmp_path / "bomb.yaml"
    config.write_text("\n".join(lines) + "\n")
    assert len(config.read_bytes()) < 1000
    assert "aliases are not allowed" in _one_line(capsys, ["train", str(config), "--output-dir", str(tmp_path / "r")])
    assert not (tmp_path / "r").exists()


def test_overrides_and_options_refuse_aliases_too(tmp_path, capsys):
    err = _one_line(capsys, ["train", CONFIG, "--output-dir", str(tmp_path / "r"), "reward.options=[&a [1], *a]"])
    assert "aliases are not allowed" in err


def test_a_non_utf8_prompts_file_is_exit_2(tmp_path, capsys):
    """Failed before: UnicodeDecodeError, exit 1."""
    prompts = tmp_path / "p.txt"
    prompts.write_bytes(b"a cat\n\xff\xfe caf\xe9\n")
    assert "not UTF-8" in _one_line(capsys, ["sample", "--model", "digits", "--prompts", str(prompts),
                                             "--out", str(tmp_path / "o.png")])


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_are_a_clean_interrupted_exit(monkeypatch, capsys, signum):
    """Failed before: SIGTERM/SIGHUP killed the process outright (no finally blocks, no message)."""
    released = []

    def command(_args):
        try:
            os.kill(os.getpid(), signum)
            raise AssertionError("the signal should have interrupted the command")
        finally:
            released.append(True)  # e.g. the run lock

    monkeypatch.setitem(cli.COMMANDS, "list", command)
    assert main(["list"]) == 128 + signum
    assert released == [True]
    assert capsys.readouterr().err.strip() == f"diffalign: interrupted ({signal.Signals(signum).name})"
    assert signal.getsignal(signum) is not cli._raise_terminated  # handlers restored


def test_prompt_results_replace_a_planted_symlink_instead_of_writing_through_it(tmp_path):
    """Failed before: OUT.jsonl and OUT.jsonl.part0 were written through pre-planted symlinks."""
    from accelerate import PartialState

    from diffalign.cli_prompts import sample_prompts
    from diffalign.samplers.base import SampleOutput

    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    out = tmp_path / "grid.png"
    for name in ("grid.jsonl", "grid.jsonl.part0"):
        (tmp_path / name).symlink_to(victim)

    class Sampler:  # one prompt-set call: 2 prompts x 2 samples
        def sample(self, model, reward, prompts, **kwargs):
            return SampleOutput(torch.rand(2 * len(prompts), 1, 8, 8), None, nfe=0,
                                info={"seconds": 0.0, "nfe_per_prompt": [0] * len(prompts)})

    args = SimpleNamespace(prompt_list=["a", "b"], prompt_metadata=None, num_samples=2, nfe=None, steps=2, seed=0)
    model = SimpleNamespace(decode=lambda x: x)
    sample_prompts(args, PartialState(cpu=True), Sampler(), model, None, out)
    assert victim.read_text() == "untouched"
    assert not (tmp_path / "grid.jsonl").is_symlink() and len((tmp_path / "grid.jsonl").read_text().splitlines()) == 2
    assert not (tmp_path / "grid.jsonl.part0").exists()


def test_checkpoint_files_follow_the_umask(tmp_path):
    """Failed before: safetensors wrote the checkpoint's files 0600 whatever the umask."""
    from diffalign.trainers import checkpoint as ckpt

    old = os.umask(0o022)
    try:
        w = torch.nn.Parameter(torch.ones(2))
        directory = ckpt.save_checkpoint(tmp_path, 1, trainable={"w": w.detach()}, optimizer=torch.optim.SGD([w], lr=1).state_dict(),
                                         scheduler={}, ema=None, extra={}, keep=2)
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()}
    assert set(modes.values()) == {0o644}, modes
    assert stat.S_IMODE(directory.stat().st_mode) == 0o755
