"""``diffalign sample`` on a local pipeline directory: prompts, prompt files (also split by accelerate
across two CPU processes), the hub-id-offline error and the attention option."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from diffalign.cli import main

ROOT = Path(__file__).resolve().parents[2]
PROMPTS = ["a red square", "a blue circle", "a green triangle"]
COMMON = ["--sampler", "best-of-n", "--reward", "compressibility", "--nfe", "16", "--steps", "2", "--num-samples", "2"]


def test_prompt_with_cfg_and_negative_prompt(sd_dir, tmp_path, capsys):
    out = tmp_path / "cat.png"
    code = main(["sample", "--model", str(sd_dir), "--prompt", "a cat", "--cfg", "2", "--negative-prompt", "blurry",
                 "--nfe", "32", *COMMON[:4], *COMMON[6:], "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert out.is_file() and "32 NFE" in capsys.readouterr().out


def test_prompts_file_writes_one_grid_and_one_json_line_per_prompt(sd_dir, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n\n")
    code = main(["sample", "--model", str(sd_dir), "--prompts", str(prompts), *COMMON, "--out", str(tmp_path / "g.png")])
    assert code == 0, capsys.readouterr().err
    lines = [json.loads(x) for x in (tmp_path / "g.jsonl").read_text().splitlines()]
    assert [line["prompt"] for line in lines] == PROMPTS
    assert all(line["nfe"] == 16 and len(line["rewards"]) == 2 and Path(line["image"]).is_file() for line in lines)


def test_accelerate_launch_splits_prompts_across_two_processes(sd_dir, tmp_path, capsys):
    bindir = Path(sys.executable).parent
    if not (bindir / "accelerate").exists():
        pytest.skip("accelerate's launcher is not installed beside this Python")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS))
    assert main(["sample", "--model", str(sd_dir), "--prompts", str(prompts), *COMMON, "--out", str(tmp_path / "one.png")]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    launch = [str(bindir / "accelerate"), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "diffalign"]
    proc = subprocess.run(launch + ["sample", "--model", str(sd_dir), "--prompts", str(prompts), *COMMON,
                                    "--out", str(tmp_path / "two.png")], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    one = [json.loads(x) for x in (tmp_path / "one.jsonl").read_text().splitlines()]
    two = [json.loads(x) for x in (tmp_path / "two.jsonl").read_text().splitlines()]
    assert sorted({line["process"] for line in two}) == [0, 1]  # both processes worked
    assert [line["prompt"] for line in two] == PROMPTS
    for a, b in zip(one, two):  # seeds follow the prompt index, not the process
        assert a["rewards"] == pytest.approx(b["rewards"], abs=1e-5)
    assert not list(tmp_path.glob("*.part*"))


def test_hub_id_offline_says_download_first(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    code = main(["sample", "--model", "someone/not-downloaded", "--prompt", "a cat", "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "must be downloaded first" in err and "someone/not-downloaded" in err


@pytest.mark.parametrize("backend,message", [("flash", "valid choices: sdpa, xformers"), ("xformers", "xformers")])
def test_attention_option_errors(sd_dir, tmp_path, capsys, backend, message):
    code = main(["sample", "--model", str(sd_dir), "--prompt", "a cat", "--attention", backend, "--steps", "1",
                 "--num-samples", "1", "--out", str(tmp_path / "x.png")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and message in err, err


def test_prompt_argument_errors(sd_dir, tmp_path, capsys):
    base = ["sample", "--model", str(sd_dir), "--out", str(tmp_path / "x.png")]
    assert main(base + ["--prompt", "a", "--prompts", "f.txt"]) == 2
    assert main(base + ["--prompts", str(tmp_path / "missing.txt")]) == 2
    assert main(base + ["--prompt", "a", "--negative-prompt", "b"]) == 2
    err = capsys.readouterr().err
    assert "exclude each other" in err and "does not exist" in err and "--cfg" in err
