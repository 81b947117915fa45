"""RLGDenoiser: the w = 0 / w = 1 identities, linearity in w, the LoRA toggle, NFE and errors."""

import pytest
import torch

import diffalign as da
from diffalign.cli import main
from diffalign.oracles import gaussian_denoiser
from diffalign.models.lora import add_lora, save_lora

VP = da.VPSchedule.linear(1e-4, 0.02, 1000)


@pytest.fixture
def pair():
    return gaussian_denoiser([0.0, 0.0], [1.0, 1.0], VP), gaussian_denoiser([1.5, -0.5], [0.5, 1.0], VP)


def _inputs():
    return torch.randn(6, 2, dtype=torch.float64), torch.linspace(0.1, 1.0, 6, dtype=torch.float64)


def test_weight_zero_and_one_are_the_models_bit_for_bit(pair):
    base, tuned = pair
    x, t = _inputs()
    for weight, model in ((0.0, base), (1.0, tuned)):
        got = da.RLGDenoiser(base, tuned, weight).predict(x, t)
        want = model.predict(x, t)
        assert torch.equal(got.x0, want.x0) and torch.equal(got.eps, want.eps), weight
    a = da.sample(da.RLGDenoiser(base, tuned, 0.0), None, num_samples=32, steps=10, seed=1, progress=False)
    b = da.sample(base, None, num_samples=32, steps=10, seed=1, progress=False)
    assert torch.equal(a.samples, b.samples)


def test_prediction_is_affine_in_the_weight(pair):
    base, tuned = pair
    x, t = _inputs()
    pb, pt = base.predict(x, t), tuned.predict(x, t)
    for weight in (0.5, 1.5, 3.0):
        got = da.RLGDenoiser(base, tuned, weight).predict(x, t)
        for kind in ("x0", "eps", "v", "flow"):
            want = (1 - weight) * pb.as_kind(kind) + weight * pt.as_kind(kind)
            torch.testing.assert_close(got.as_kind(kind), want, msg=f"{kind} at w={weight}")
    # equal steps in w give equal steps in the prediction
    eps = [da.RLGDenoiser(base, tuned, w).predict(x, t).eps for w in (1.0, 2.0, 3.0)]
    torch.testing.assert_close(eps[2] - eps[1], eps[1] - eps[0])


def test_extrapolation_tilts_past_the_tuned_model(pair):
    """p_base^(1-w) p_tuned^w of two Gaussians is Gaussian; at w = 2 its mean lies beyond the tuned one's."""
    base = gaussian_denoiser([0.0], [1.0], VP)
    tuned = gaussian_denoiser([1.0], [1.0], VP)
    out = da.sample(da.RLGDenoiser(base, tuned, 2.0), None, num_samples=4000, steps=100, seed=0, progress=False)
    assert out.samples.mean().item() == pytest.approx(2.0, abs=0.08)


@pytest.fixture(scope="module")
def lora_model():
    model = da.load_model("digits-flow")
    add_lora(model.network, rank=4, alpha=4.0, target_modules=["to_q", "to_k", "to_v", "to_out.0"], seed=0)
    with torch.no_grad():  # stands in for training: B = 0 would make the adapter a no-op
        for name, p in model.network.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.2)
    return model.eval()


def test_lora_toggle_equals_two_separate_models(lora_model):
    plain = da.load_model("digits-flow")
    cond = plain.encode_condition(4, 3)
    x, t = torch.randn(3, *plain.shape), torch.full((3,), 0.6)
    with torch.no_grad():
        toggled = da.RLGDenoiser(lora_model, lora_model, 1.5, guidance_scale=3.0).predict(x, t, cond).flow
        separate = da.RLGDenoiser(plain, lora_model, 1.5, guidance_scale=3.0).predict(x, t, cond).flow
        tuned_only = da.CFGDenoiser(lora_model, 3.0).predict(x, t, cond).flow
    torch.testing.assert_close(toggled, separate, rtol=0, atol=1e-6)
    assert (toggled - tuned_only).abs().max() > 1e-3  # the base pass really ran without the adapter
    with torch.no_grad():  # and the adapters are back on afterwards
        torch.testing.assert_close(da.CFGDenoiser(lora_model, 3.0).predict(x, t, cond).flow, tuned_only)


def test_cfg_costs_four_passes_per_step(lora_model):
    rlg = da.RLGDenoiser(lora_model, lora_model, 1.5, guidance_scale=3.0)
    out = da.sample(rlg, None, num_samples=2, steps=3, seed=0, cond=5, progress=False)
    assert out.nfe == 2 * 3 * 4
    assert da.RLGDenoiser(lora_model, lora_model, 1.5).evals_for(lora_model.encode_condition(5, 1)) == 2
    assert da.RLGDenoiser(lora_model, lora_model, 1.0, guidance_scale=3.0).evals_for(lora_model.encode_condition(5, 1)) == 2


def test_cli_rlg_lora(tmp_path, lora_model, capsys):
    save_lora(lora_model.network, tmp_path / "lora")
    png = tmp_path / "rlg.png"
    code = main(["sample", "--model", "digits-flow", "--rlg-lora", str(tmp_path / "lora"), "--rlg-weight", "1.5",
                 "--cfg", "3", "--cond", "3", "--num-samples", "2", "--steps", "4", "--out", str(png)])
    assert code == 0 and png.exists()
    assert "32 NFE" in capsys.readouterr().out  # 2 samples x 4 steps x 4 passes


@pytest.mark.parametrize("argv,message", [
    (["--rlg-weight", "2"], "--rlg-weight needs --rlg-lora"),
    (["--rlg-lora", "/nonexistent/lora"], "does not exist"),
    (["--rlg-lora", ".", "--lora", "."], "exclude each other"),
    (["--rlg-lora", ".", "--rlg-weight", "-1"], "--rlg-weight must be a finite number >= 0"),
])
def test_cli_rlg_errors(tmp_path, capsys, argv, message):
    assert main(["sample", *argv, "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_mismatched_models_and_bad_weights_are_one_clear_error(pair):
    base, tuned = pair
    flow = gaussian_denoiser([0.0, 0.0], [1.0, 1.0], da.FlowSchedule())
    other_vp = gaussian_denoiser([0.0, 0.0], [1.0, 1.0], da.VPSchedule.scaled_linear())
    wide = gaussian_denoiser([0.0, 0.0, 0.0], [1.0, 1.0, 1.0], VP)
    with pytest.raises(da.DiffalignError, match="different schedules"):
        da.RLGDenoiser(base, flow, 1.5)
    with pytest.raises(da.DiffalignError, match="different schedules"):
        da.RLGDenoiser(base, other_vp, 1.5)
    with pytest.raises(da.DiffalignError, match="different sample shapes"):
        da.RLGDenoiser(base, wide, 1.5)
    for weight in (float("nan"), float("inf"), -0.5, "1.5", True):
        with pytest.raises(da.DiffalignError, match="RLG weight must be a finite number >= 0"):
            da.RLGDenoiser(base, tuned, weight)
    with pytest.raises(da.DiffalignError, match="no LoRA adapter"):
        da.RLGDenoiser(base, base, 1.5)
