"""Training on prompt datasets (design.md §3b): one prompt per group, prompts drawn from (seed, step,
index), evaluation of held-out prompts into eval.jsonl and the trackers, resume without duplicates."""

import json
import os
import subprocess
import time
import sys
from pathlib import Path

import pytest
import torch
import yaml

from diffalign.errors import DiffalignError
from diffalign.trainers import config_from_dict, get_trainer

from .conftest import sigkill_once_written, tiny_raw

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def prompt_files(tmp_path):
    train = tmp_path / "train.txt"
    train.write_text("".join(f"{d}\n" for d in (0, 1, 2, 3, 4, 5, 6)))
    test = tmp_path / "test.jsonl"  # held-out digits, with metadata
    test.write_text("".join(json.dumps({"prompt": str(d), "category": "held-out"}) + "\n" for d in (7, 8, 9)))
    return str(train), str(test)


def prompt_raw(method, prompt_files, **sections):
    train, test = prompt_files
    data = {"train_prompts": train, "test_prompts": test, "eval_every": 1, "eval_samples_per_prompt": 2,
            "eval_steps": 3, **sections.pop("data", {})}
    # no target: the digit reward reads each image's prompt as its digit
    return tiny_raw(method, reward={"name": "digit", "options": {}}, data=data, **sections)


def test_each_group_is_one_prompt_drawn_from_seed_step_and_index(prompt_files, tmp_path):
    config = config_from_dict(prompt_raw("grpo", prompt_files, groups_per_micro_batch=3))
    trainer = get_trainer("grpo")(config, tmp_path / "a")
    rows = trainer.rollout_rows(5, 1, 3, 4)
    assert len(rows.prompts) == 12 and all(len(set(rows.prompts[g * 4:(g + 1) * 4])) == 1 for g in range(3))
    again = get_trainer("grpo")(config, tmp_path / "b").rollout_rows(5, 1, 3, 4)
    assert again.prompts == rows.prompts  # (seed, step, index) alone decide
    draws = {tuple(trainer.rollout_rows(step, 0, 3, 1).prompts) for step in range(20)}
    assert len(draws) > 5 and set(p for d in draws for p in d) <= set("0123456")  # never a test prompt
    batch = trainer.make_micro_batch(0, 0, torch.Generator().manual_seed(0))
    # group-normalised advantages: zero mean within each prompt's group
    assert batch["advantages"].view(3, 4).mean(1).abs().max() < 1e-5


def test_balance_by_draws_each_metadata_value_equally_often(prompt_files, tmp_path):
    from diffalign.trainers.prompt_data import TrainingPrompts

    train = tmp_path / "skewed.jsonl"  # nine prompts of one category, one of another
    train.write_text("".join(json.dumps({"prompt": str(d), "category": "many" if d else "rare"}) + "\n" for d in range(10)))
    uniform, balanced = TrainingPrompts(train, 0), TrainingPrompts(train, 0, balance_by="category")
    draws = [balanced.draw(step, 0, 8) for step in range(200)]
    rare = sum(d.count(0) for d in draws) / 1600
    assert 0.45 < rare < 0.55  # the one 'rare' prompt: half the groups, not a tenth
    assert sum(d.count(0) for d in (uniform.draw(s, 0, 8) for s in range(200))) / 1600 < 0.15
    assert {i for d in draws for i in d} == set(range(10))  # every prompt of the large group is drawn
    assert balanced.draw(7, 1, 8) == TrainingPrompts(train, 0, balance_by="category").draw(7, 1, 8)
    raw = prompt_raw("grpo", (str(train), prompt_files[1]), data={"balance_by": "categry"})
    with pytest.raises(DiffalignError, match="'categry'.*row 1.*its fields: category"):
        config_from_dict(raw)
    with pytest.raises(DiffalignError, match="a .txt file with no metadata"):
        config_from_dict(prompt_raw("grpo", prompt_files, data={"balance_by": "category"}))


def test_evaluation_writes_eval_jsonl_scalars_and_grids_and_resume_adds_no_duplicates(prompt_files, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    raw = prompt_raw("grpo", prompt_files, train={"report_to": "tensorboard", "max_steps": 2},
                     data={"eval_rewards": ["digit", {"name": "compressibility", "label": "jpeg"}]})
    config = config_from_dict(raw)
    get_trainer("grpo")(config, tmp_path / "run").train()
    lines = [json.loads(x) for x in (tmp_path / "run" / "eval.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [0, 1, 2]  # 0: the base model
    for line in lines:
        assert set(line["rewards"]) == {"digit", "jpeg"} and len(line["rewards"]["digit"]["per_prompt"]) == 3
        per_prompt = line["rewards"]["digit"]["per_prompt"]
        assert line["rewards"]["digit"]["mean"] == pytest.approx(sum(per_prompt) / 3, abs=1e-5)
    events = [p for p in (tmp_path / "run" / "logs").rglob("events.out.tfevents*")]
    tags = {"scalars": set(), "images": set()}
    for path in events:
        acc = EventAccumulator(str(path.parent))
        acc.Reload()
        tags["scalars"] |= set(acc.Tags()["scalars"])
        tags["images"] |= set(acc.Tags()["images"])
    assert {"eval/digit", "eval/jpeg"} <= tags["scalars"] and "eval/samples" in tags["images"]
    # extending the run resumes: the history stays, step 2 is not evaluated twice
    get_trainer("grpo")(config, tmp_path / "run").train(max_steps=3)
    lines = [json.loads(x) for x in (tmp_path / "run" / "eval.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines] == [0, 1, 2, 3]


@pytest.mark.parametrize("method", ["rwr", "flow_dpo", "grpo"])
def test_resume_with_a_prompt_dataset_is_bit_exact(prompt_files, tmp_path, method):
    config = config_from_dict(prompt_raw(method, prompt_files, train={"max_steps": 3},
                                         data={"eval_every": 0}))
    whole = get_trainer(method)(config, tmp_path / "whole")
    whole.train()
    first = get_trainer(method)(config, tmp_path / "split")
    first.train(max_steps=1)
    second = get_trainer(method)(config, tmp_path / "split")
    second.train()
    named = lambda t: {n: p for n, p in t.model.named_parameters() if p.requires_grad}  # noqa: E731
    expected, got = named(whole), named(second)
    assert all(torch.equal(expected[n], got[n]) for n in expected)
    # the split run also evaluated at the end of its first part (step 1); step 3 is identical
    whole_lines = _eval_lines(tmp_path / "whole")
    split_lines = _eval_lines(tmp_path / "split")
    assert [line["step"] for line in split_lines] == [1, 3] and split_lines[-1] == whole_lines[-1]


def test_cfg_rollouts_cost_two_passes(prompt_files, tmp_path):
    config = config_from_dict(prompt_raw("grpo", prompt_files, model={"guidance_scale": 3.0}, data={"eval_every": 0}))
    trainer = get_trainer("grpo")(config, tmp_path / "cfg")
    assert trainer.policy(trainer.model).evals_for(trainer.rollout_rows(0, 0, 1, 2).cond) == 2
    off = config_from_dict(prompt_raw("grpo", prompt_files, model={"guidance_scale": 3.0},
                                      train={"rollout_cfg": False}, data={"eval_every": 0}))
    trainer = get_trainer("grpo")(off, tmp_path / "no-cfg")
    assert trainer.policy(trainer.model) is trainer.model


def test_prompts_and_a_fixed_condition_exclude_each_other(prompt_files):
    with pytest.raises(DiffalignError, match="'model.cond' and 'data.train_prompts' exclude each other"):
        config_from_dict(prompt_raw("grpo", prompt_files, model={"cond": 3}))
    with pytest.raises(DiffalignError, match="need 'data.test_prompts'"):
        config_from_dict(tiny_raw("grpo", data={"eval_every": 5}))


@pytest.mark.parametrize("content,message", [
    (b"0\n  \n", "line 2: blank prompt"),
    (b"0\n\xff\n", "line 2: bytes that are not UTF-8"),
    (b"", "has no prompts"),
])
def test_bad_prompt_file_in_a_config_is_one_line_exit_2_before_torch(tmp_path, content, message):
    prompts = tmp_path / "p.txt"
    prompts.write_bytes(content)
    config = tmp_path / "c.yaml"
    raw = tiny_raw("grpo", data={"train_prompts": str(prompts)})
    config.write_text(yaml.safe_dump(raw))
    code = ("import sys; from diffalign.cli import main; rc = main(sys.argv[1:]); "
            "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, "train", str(config), "--output-dir", str(tmp_path / "out")],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    err = proc.stderr.strip()
    assert proc.returncode == 2 and len(err.splitlines()) == 1 and message in err and "p.txt" in err, err
    assert not (tmp_path / "out").exists()  # nothing written


def _eval_lines(run) -> list[dict]:
    """eval.jsonl's lines without their wall-clock time."""
    lines = [json.loads(x) for x in (Path(run) / "eval.jsonl").read_text().splitlines()]
    return [{k: v for k, v in line.items() if k != "time"} for line in lines]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}


def _lora(directory):
    from safetensors.torch import load_file

    return load_file(str(Path(directory) / "final" / "pytorch_lora_weights.safetensors"))


@pytest.mark.slow
def test_sigkill_with_a_prompt_dataset_then_rerun_equals_an_uninterrupted_run(prompt_files, tmp_path):
    config = tmp_path / "grpo.yaml"
    config.write_text(yaml.safe_dump(prompt_raw("grpo", prompt_files, train={"max_steps": 30, "checkpoint_every": 2},
                                                data={"eval_every": 4})))
    command = [sys.executable, "-m", "diffalign", "train", str(config), "--output-dir"]
    subprocess.run(command + [str(tmp_path / "whole")], env=_env(), check=True, capture_output=True)
    process = subprocess.Popen(command + [str(tmp_path / "killed")], env=_env(), stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    checkpoint = tmp_path / "killed" / "checkpoints" / "step-000006"
    sigkill_once_written(process, checkpoint)
    assert not (tmp_path / "killed" / "final").exists(), "the run ended before it could be killed"
    subprocess.run(command + [str(tmp_path / "killed")], env=_env(), check=True, capture_output=True)
    expected, got = _lora(tmp_path / "whole"), _lora(tmp_path / "killed")
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    whole, killed = _eval_lines(tmp_path / "whole"), _eval_lines(tmp_path / "killed")
    assert killed == whole and [line["step"] for line in whole] == [0, 4, 8, 12, 16, 20, 24, 28, 30]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["grpo", "flow_dpo"])
def test_two_processes_with_a_prompt_dataset_match_one_process_with_doubled_accumulation(prompt_files, tmp_path, method):
    def config(accumulation):
        path = tmp_path / f"{method}-{accumulation}.yaml"
        raw = prompt_raw(method, prompt_files, train={"max_steps": 2, "gradient_accumulation_steps": accumulation},
                         data={"eval_every": 0})
        path.write_text(yaml.safe_dump(raw))
        return str(path)

    single = subprocess.run([sys.executable, "-m", "diffalign", "train", config(2), "--output-dir", str(tmp_path / "one")],
                            env=_env(), capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-2000:]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "diffalign"]
    double = subprocess.run(launch + ["train", config(1), "--output-dir", str(tmp_path / "two")],
                            env=_env(), capture_output=True, text=True)
    assert double.returncode == 0, double.stderr[-2000:]
    expected, got = _lora(tmp_path / "one"), _lora(tmp_path / "two")
    assert max((v - (torch.zeros_like(v) if "lora_B" in k else v)).abs().max().item() for k, v in expected.items()) > 0
    for key in expected:  # equal up to the order of float summation across processes
        torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-7)
    assert _eval_lines(tmp_path / "one") == _eval_lines(tmp_path / "two")


@pytest.mark.parametrize("method", ["hypernoise", "noisy_reward"])
def test_one_condition_methods_refuse_a_prompt_dataset(prompt_files, method):
    raw = {"method": method, "data": {"train_prompts": prompt_files[0]}}
    with pytest.raises(DiffalignError, match=f"method '{method}' does not take a prompt dataset"):
        config_from_dict(raw)


def test_async_scoring_overlaps_rollouts_and_changes_nothing(prompt_files, tmp_path, monkeypatch):
    """train.async_scoring: micro-batch i is scored while micro-batch i + 1 rolls out (same step, so
    on-policy); the trained weights are exactly those of inline scoring."""
    import diffalign as da
    from diffalign.rewards import DigitReward

    results = {}
    for mode in (False, True):
        scoring, rollouts = [], []
        digit = DigitReward()

        def sleepy(images, prompts):
            start = time.perf_counter()
            time.sleep(0.2)  # a remote or GPU reward: the GIL is free meanwhile
            scores = digit(images, prompts=prompts)
            scoring.append((start, time.perf_counter()))
            return scores

        monkeypatch.setattr(da.rewards, "get", lambda name, **options: da.rewards.as_reward(sleepy))
        raw = prompt_raw("grpo", prompt_files, train={"max_steps": 1, "gradient_accumulation_steps": 3,
                                                     "async_scoring": mode}, data={"eval_every": 0, "test_prompts": None})
        trainer = get_trainer("grpo")(config_from_dict(raw), tmp_path / str(mode))
        make = trainer.make_micro_batch

        def timed_make(*args):
            start = time.perf_counter()
            batch = make(*args)
            rollouts.append((start, time.perf_counter()))
            return batch

        trainer.make_micro_batch = timed_make
        trainer.train()
        params = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}
        # does micro-batch i + 1 start rolling out before micro-batch i's scoring has ended?
        results[mode] = (params, [rollouts[i + 1][0] < scoring[i][1] for i in range(2)])
    (inline, inline_overlap), (overlapped, async_overlap) = results[False], results[True]
    assert all(torch.equal(inline[n], overlapped[n]) for n in inline)
    assert inline_overlap == [False, False] and async_overlap == [True, True]
