"""--reward name=weight,...: parsed without torch into a weighted-sum whose options reach the right terms."""

import pytest
import torch

import diffalign as da
from diffalign.cli import main
from diffalign.cli_validation import weighted_reward_terms


def test_terms_route_each_option_to_the_rewards_that_take_it():
    terms = weighted_reward_terms("digit=1.0, compressibility=0.1", {"target": 3, "quality": 90})
    assert terms == [("digit", 1.0, {"target": 3}), ("compressibility", 0.1, {"quality": 90})]
    assert weighted_reward_terms("digit", {"target": 1}) == [("digit", 1.0, {"target": 1})]
    assert weighted_reward_terms("digit=-2e-1", {"target": 1})[0][1] == -0.2


@pytest.mark.parametrize("text,message", [
    ("digit=1,digit=2", "names 'digit' twice"),
    ("=1", "expected name=weight"),
    ("weighted-sum=1", "unknown reward 'weighted-sum'"),
    ("digit=inf", "must be a finite number"),
])
def test_bad_weighted_rewards_are_refused(text, message):
    with pytest.raises(da.DiffalignError, match=message):
        weighted_reward_terms(text, {"target": 3})


def test_cli_samples_with_a_weighted_reward(tmp_path, capsys):
    png = tmp_path / "w.png"
    code = main(["sample", "--model", "digits", "--sampler", "best-of-n", "--reward", "digit=1.0,compressibility=0.1",
                 "--target", "3", "--nfe", "24", "--num-samples", "2", "--steps", "4", "--seed", "0", "--out", str(png)])
    assert code == 0 and png.exists()
    printed = float(capsys.readouterr().out.split("mean reward ")[1].split(",")[0])
    # the same samples scored by hand with the same weights
    out = da.sample(da.load_model("digits"), sampler="best-of-n", num_samples=2, nfe=24, steps=4, seed=0,
                    reward=da.rewards.get("weighted-sum", rewards=[da.rewards.get("digit", target=3),
                                                                   da.rewards.get("compressibility")],
                                          weights=[1.0, 0.1]))
    assert printed == pytest.approx(out.rewards.float().mean().item(), abs=1e-4)
    digit = da.rewards.get("digit", target=3)(da.load_model("digits").decode(out.samples))
    assert not torch.allclose(out.rewards, digit)  # compressibility really entered the sum
