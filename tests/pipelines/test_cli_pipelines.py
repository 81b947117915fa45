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


def test_prompt_file_reward_sees_each_prompt_and_its_metadata(sd_dir, tmp_path, capsys):
    """A reward of your own (FILE.py:NAME) gets each image's own prompt and the jsonl file's other fields."""
    reward = tmp_path / "my_reward.py"
    reward.write_text("import torch\n\ndef score(images, prompts, metadata):\n"
                      "    return torch.tensor([len(p) + m['bonus'] for p, m in zip(prompts, metadata)], dtype=torch.float32)\n")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p, "bonus": 100 * i}) + "\n" for i, p in enumerate(PROMPTS)))
    for sampler in ("best-of-n", "smc", "dts-star"):
        out = tmp_path / f"{sampler}.png"
        code = main(["sample", "--model", str(sd_dir), "--prompts", str(prompts), "--sampler", sampler,
                     "--reward", f"{reward}:score", "--nfe", "16", "--steps", "2", "--num-samples", "2",
                     "--out", str(out)])
        assert code == 0, capsys.readouterr().err
        lines = [json.loads(x) for x in out.with_suffix(".jsonl").read_text().splitlines()]
        for i, line in enumerate(lines):
            assert line["rewards"] == [len(PROMPTS[i]) + 100 * i] * 2, (sampler, line)


@pytest.mark.parametrize("name,content,message", [
    ("p.csv", "a\n", "unknown format '.csv'; valid choices: .txt, .jsonl"),
    ("p.txt", "", "has no prompts"),
    ("p.txt", "a cat\n   \n", "p.txt, line 2: blank prompt"),
    ("p.jsonl", '{"prompt": "a"}\n{"text": "b"}\n', "p.jsonl, line 2: needs a \"prompt\" string field"),
    ("p.jsonl", '{"prompt": "a"}\n{"prompt": \n', "p.jsonl, line 2: not valid JSON"),
    ("p.jsonl", '{"prompt": " "}\n', "line 1: blank prompt"),
    ("p.txt", b"a cat\n\xff\xfe dog\n", "line 2: bytes that are not UTF-8"),
])
def test_bad_prompt_files_are_one_line_exit_2_before_torch(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    code = ("import sys; from diffalign.cli import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, "sample", "--model", "digits", "--prompts", str(path),
                           "--out", str(tmp_path / "x.png")], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    err = proc.stderr.strip()
    assert proc.returncode == 2 and len(err.splitlines()) == 1 and message in err, err
