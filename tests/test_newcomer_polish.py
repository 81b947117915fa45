"""Newcomer polish from issue 22 (item 7). Each failed before its fix."""

import shlex
from pathlib import Path

import pytest

import diffalign as da
from diffalign.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_print_model_is_one_short_line():
    """Failed before: nn.Module's repr printed every layer, 18 kB."""
    text = repr(da.load_model("digits-flow"))
    assert "\n" not in text and len(text) < 300 and "SD3Transformer2DModel" in text


def test_train_help_names_every_method(capsys):
    """Failed before: `train --help` did not mention hypernoise."""
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    for method in ("flow_dpo", "rwr", "grpo", "noisy_reward", "hypernoise"):
        assert method in out


def test_the_hypernoise_presets_sample_command_runs(tmp_path, capsys):
    """Failed before: the preset's comment said `diffalign sample digits-fast ...` (no --model)."""
    from diffalign.models.hypernetwork_forms import build_hypernetwork

    line = next(l for l in (ROOT / "configs" / "hypernoise_digits.yaml").read_text().splitlines() if "diffalign sample" in l)
    argv = shlex.split(line.lstrip("# "))[1:]
    argv = [a.replace("runs/hypernoise", str(tmp_path / "run")) for a in argv] + ["--num-samples", "2", "--out", str(tmp_path / "g.png")]
    build_hypernetwork("lora", da.load_model("digits-fast")).save_pretrained(tmp_path / "run" / "final")
    assert main(argv) == 0, capsys.readouterr().err
    assert (tmp_path / "g.png").is_file()


def test_a_lora_of_a_different_size_model_is_one_line(tmp_path, capfd):
    """Failed before: diffusers and peft printed a state-dict error per tensor (27 lines) before ours."""
    from diffalign.models.lora import add_lora, save_lora
    from tests.pipelines.tiny import tiny_sd3_transformer

    network = tiny_sd3_transformer()
    add_lora(network, 2, 2.0, ["to_q", "to_v"], 0)
    save_lora(network, tmp_path / "lora")
    capfd.readouterr()
    assert main(["sample", "--model", "digits-flow", "--lora", str(tmp_path / "lora"), "--steps", "2", "--num-samples", "1",
                 "--out", str(tmp_path / "x.png")]) == 2
    captured = capfd.readouterr()
    err = [line for line in captured.err.splitlines() if line.strip()]
    assert len(err) == 1 and "different-size model" in err[0], captured.err


def test_the_reward_vs_nfe_plot_labels_each_budget_once(tmp_path):
    """Failed before: the log axis also labelled its minor ticks (2x10^3, 3x10^3, ...), which overlapped."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import search

    budgets = [2000, 5000, 10000, 20000]
    fig = search._plot(budgets, {"best-of-N": [1, 2, 3, 4], "DTS*": [2, 3, 4, 5]}, tmp_path / "p.png")
    ax = fig.axes[0]
    fig.canvas.draw()
    major = [t.get_text() for t in ax.get_xticklabels() if t.get_text()]
    minor = [t.get_text() for t in ax.get_xticklabels(minor=True) if t.get_text()]
    assert major == ["2k", "5k", "10k", "20k"] and minor == []
