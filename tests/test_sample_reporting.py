"""What a sampler tells its user besides the samples: info keys, warnings, repr, progress bars."""

import warnings

import pytest
import torch

import diffalign as da
from diffalign.oracles import gaussian_denoiser
from diffalign.samplers import progress

SCHEDULE = da.VPSchedule.linear(1e-4, 0.02, 1000)
POOLING = ("sir", "smc", "dts", "dts-star")


def linear_reward(x):
    return x[:, 0]


@pytest.fixture
def model():
    return gaussian_denoiser([0.0, 0.0], [1.0, 1.0], SCHEDULE)


def sample_quietly(model, sampler, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = da.sample(model, linear_reward, sampler=sampler, steps=10, seed=0, **kwargs)
    return out, [w for w in caught if issubclass(w.category, da.SamplingWarning)]


@pytest.mark.parametrize("sampler", ["ancestral", "best-of-n", *POOLING])
def test_every_output_records_plain_info(model, sampler):
    out, _ = sample_quietly(model, sampler, num_samples=8, nfe=8 * 10 * 4)
    assert isinstance(out.info["seconds"], float) and out.info["seconds"] > 0
    if sampler in POOLING:
        assert isinstance(out.info["distinct"], int) and 1 <= out.info["distinct"] <= 8
        assert "ess" in out.info and (out.info["ess"] is None or isinstance(out.info["ess"], float))
    for key, value in out.info.items():  # plain Python values or tensors, never numpy
        assert value is None or isinstance(value, (bool, int, float, str, torch.Tensor)), (key, type(value))


@pytest.mark.parametrize("sampler", ["sir", "dts"])
def test_pooled_copies_are_warned(model, sampler):
    # two rollouts for 16 samples (dts: one root and its 5 leaves on the last 2 steps)
    out, caught = sample_quietly(model, sampler, num_samples=16, nfe=20)
    assert out.info["distinct"] <= 6
    assert any("distinct sample(s) among 16" in str(w.message) for w in caught)


def test_enough_distinct_samples_are_not_warned(model):
    out, caught = sample_quietly(model, "sir", num_samples=4, nfe=10 * 400, lam=0.1)
    assert out.info["distinct"] >= 3 and out.info["ess"] > 100
    assert not caught


def test_unused_budget_is_warned(model):
    out, caught = sample_quietly(model, "ancestral", num_samples=4, nfe=20_000)
    assert out.nfe == 40
    assert any("spent 40 of the nfe=20000 budget" in str(w.message) for w in caught)


def test_full_tree_warns_and_closes_the_bar(model, capsys):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = da.sample(model, linear_reward, sampler="dts", num_samples=4, nfe=20_000, steps=10,
                        max_memory_bytes=2_000, progress=True)
    assert out.info["memory_full"] and out.nfe < 20_000
    assert any("filled max_memory_bytes=2000" in str(w.message) for w in caught)
    bar = capsys.readouterr().err.split("\r")[-1]
    assert "tree memory full" in bar and "100%" in bar, bar


def test_tree_error_names_the_option_the_user_passed(model):
    with pytest.raises(da.DiffalignError, match="max_memory_bytes=10 cannot hold"):
        da.sample(model, linear_reward, sampler="dts", num_samples=1, nfe=100, steps=10, max_memory_bytes=10)


def test_repr_is_short(model):
    out, _ = sample_quietly(model, "sir", num_samples=8, nfe=800)
    text = repr(out)
    assert text.startswith("SampleOutput(samples=(8, 2), nfe=800, reward mean=") and "seconds=" in text
    assert "min=" in text and "max=" in text and "distinct=" in text
    assert len(text) < 200 and "\n" not in text


def test_progress_default_shows_bars_when_not_a_terminal(model, capsys, monkeypatch):
    monkeypatch.setattr(progress, "PROGRESS_DELAY_S", 0.0)  # the default waits 3 s; this run is shorter
    da.sample(model, None, sampler="ancestral", num_samples=2, steps=10)
    assert "denoise" in capsys.readouterr().err
    da.sample(model, None, sampler="ancestral", num_samples=2, steps=10, progress=False)
    assert capsys.readouterr().err == ""


def test_progress_bar_takes_disable_with_progress_off():
    """progress=False plus an explicit disable= once raised "multiple values for keyword 'disable'"."""
    from diffalign.samplers.progress import progress_bar

    bar = progress_bar(range(3), progress=False, disable=True, desc="x")
    assert bar.disable and list(bar) == [0, 1, 2]
