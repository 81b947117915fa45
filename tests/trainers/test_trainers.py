"""Every trainer learns something, keeps its reference, and is exact about its importance ratios."""

import pytest
import torch

from diffalign.trainers import get_trainer


def _params(trainer):
    return {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("method,model", [("flow_dpo", "digits-flow"), ("flow_dpo", "digits"), ("rwr", "digits-flow"),
                                          ("grpo", "digits-flow"), ("grpo", "digits")])
def test_a_few_steps_change_every_trainable_parameter(tiny_config, tmp_path, method, model):
    trainer = get_trainer(method)(tiny_config(method, model), tmp_path)
    before = _params(trainer)
    assert before and all("lora_" in n for n in before)
    metrics = trainer.train()
    after = _params(trainer)
    assert torch.isfinite(torch.tensor(metrics["loss"]))
    unchanged = [n for n in before if torch.equal(before[n], after[n])]
    assert not unchanged, f"{len(unchanged)} of {len(before)} parameters did not move, e.g. {unchanged[:2]}"
    assert (tmp_path / "final" / "pytorch_lora_weights.safetensors").is_file()


@pytest.mark.parametrize("method", ["flow_dpo", "rwr", "grpo"])
def test_overfitting_one_batch_lowers_the_loss(tiny_config, tmp_path, method):
    extra = {"clip_range": 10.0} if method == "grpo" else {}  # let PPO move freely on one batch
    trainer = get_trainer(method)(tiny_config(method, train={"learning_rate": 3e-3}, **extra), tmp_path)
    batch = trainer.make_micro_batch(0, 0, torch.Generator().manual_seed(1))
    losses = []
    for _ in range(15):
        loss, _ = trainer.compute_loss(batch, 0)
        losses.append(loss.item())
        loss.backward()
        trainer.optimizer.step()
        trainer.optimizer.zero_grad()
    assert losses[-1] < losses[0] - 1e-4 * abs(losses[0]) - 1e-7, losses


def test_dpo_starts_at_log_2_because_the_reference_is_the_disabled_adapter(tiny_config, tmp_path):
    trainer = get_trainer("flow_dpo")(tiny_config("flow_dpo"), tmp_path)
    with torch.no_grad():  # make the LoRA non-zero: the policy now differs from the reference
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    batch = trainer.make_micro_batch(0, 0, torch.Generator().manual_seed(0))
    loss, metrics = trainer.compute_loss(batch, 0)
    assert abs(loss.item() - 0.6931) > 1e-4  # policy != reference
    with torch.no_grad():
        for name, p in trainer.model.named_parameters():
            if "lora_B" in name:
                p.zero_()
    loss, metrics = trainer.compute_loss(batch, 0)
    assert loss.item() == pytest.approx(0.693147, abs=1e-6)


def test_grpo_importance_ratio_is_one_on_the_first_inner_epoch(tiny_config, tmp_path):
    trainer = get_trainer("grpo")(tiny_config("grpo", inner_epochs=2, train={"learning_rate": 1e-2}), tmp_path)
    batch = trainer.make_micro_batch(0, 0, torch.Generator().manual_seed(0))
    _, first = trainer.compute_loss(batch, 0)
    assert first["ratio_error"] < 1e-9
    metrics = trainer.train_step()
    assert metrics["ratio_error"] < 1e-9  # logged on the first epoch of every step


def test_grpo_with_kl_uses_the_reference_and_is_zero_at_start(tiny_config, tmp_path):
    trainer = get_trainer("grpo")(tiny_config("grpo", kl_coef=0.1), tmp_path)
    batch = trainer.make_micro_batch(0, 0, torch.Generator().manual_seed(0))
    _, metrics = trainer.compute_loss(batch, 0)
    assert metrics["kl"] == pytest.approx(0.0, abs=1e-12)
    trainer.train_step()
    _, metrics = trainer.compute_loss(batch, 0)
    assert metrics["kl"] > 0


def test_grpo_refuses_a_deterministic_kernel(tiny_config, tmp_path):
    from diffalign.errors import DiffalignError

    with pytest.raises(DiffalignError, match="stochastic kernel"):
        get_trainer("grpo")(tiny_config("grpo", kernel="euler"), tmp_path)


def test_full_finetune_holds_a_frozen_reference_and_saves_a_loadable_model(tiny_config, tmp_path):
    import diffalign as da

    config = tiny_config("flow_dpo", model={"full_finetune": True})
    trainer = get_trainer("flow_dpo")(config, tmp_path)
    assert trainer.reference is not None
    trainer.train()
    tuned = da.load_model(str(tmp_path / "final"))
    x, t = torch.randn(2, *tuned.shape), torch.rand(2)
    trainer.model.eval()
    with torch.no_grad():
        torch.testing.assert_close(tuned(x, t), trainer.model(x, t))
        assert not torch.allclose(trainer.reference(x, t), trainer.model(x, t))


def test_ema_weights_go_to_the_final_adapter(tiny_config, tmp_path):
    import diffalign as da

    trainer = get_trainer("rwr")(tiny_config("rwr", train={"ema_decay": 0.5, "max_steps": 3}), tmp_path)
    trainer.train()
    loaded = da.load_model("digits-flow", lora=tmp_path / "final")
    x, t = torch.randn(2, *loaded.shape), torch.rand(2)
    with torch.no_grad():
        ema_out = loaded(x, t)
        live_out = trainer.model(x, t)
        trainer.ema.copy_to(trainer.params)
        torch.testing.assert_close(ema_out, trainer.model(x, t))
    assert not torch.allclose(ema_out, live_out)


@pytest.fixture
def fresh_accelerator_state():
    """accelerate keeps one state per process; tests that change its precision start and end clean."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state()
    yield
    AcceleratorState._reset_state()


def test_bf16_autocast_keeps_the_on_policy_ratio_at_one(tiny_config, tmp_path, fresh_accelerator_state):
    trainer = get_trainer("grpo")(tiny_config("grpo", train={"mixed_precision": "bf16"}), tmp_path)
    metrics = trainer.train_step()
    assert metrics["ratio_error"] < 1e-6
    assert torch.isfinite(torch.tensor(metrics["loss"]))


def test_a_second_precision_in_one_process_is_a_clear_error(tiny_config, tmp_path, fresh_accelerator_state):
    from diffalign.errors import DiffalignError

    get_trainer("rwr")(tiny_config("rwr"), tmp_path / "a")
    with pytest.raises(DiffalignError, match="new process"):
        get_trainer("rwr")(tiny_config("rwr", train={"mixed_precision": "bf16"}), tmp_path / "b")


def test_gradient_checkpointing_gives_the_same_gradients(tiny_config, tmp_path):
    grads = []
    for checkpointing in (False, True):
        trainer = get_trainer("rwr")(tiny_config("rwr", model={"gradient_checkpointing": checkpointing}), tmp_path / str(checkpointing))
        assert trainer.network.is_gradient_checkpointing == checkpointing
        batch = trainer.make_micro_batch(0, 0, torch.Generator().manual_seed(0))
        loss, _ = trainer.compute_loss(batch, 0)
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in trainer.params]))
    torch.testing.assert_close(grads[0], grads[1])


def test_tensorboard_logging_writes_events(tiny_config, tmp_path):
    trainer = get_trainer("rwr")(tiny_config("rwr", train={"report_to": "tensorboard", "max_steps": 1}), tmp_path)
    trainer.train()
    assert list((tmp_path / "logs").rglob("events.out.tfevents.*"))


def test_unrecorded_rollouts_draw_the_same_samples():
    """record=False (preference and regression methods) keeps only x0, and the very same x0."""
    import diffalign as da
    from diffalign.kernels import FlowSDE
    from diffalign.trainers.trajectories import sample_trajectories

    model = da.load_model("digits-flow")
    grid = model.schedule.time_grid(4)
    kernel = FlowSDE()
    full = sample_trajectories(model, kernel, grid, None, 5, torch.Generator().manual_seed(0))
    final = sample_trajectories(model, kernel, grid, None, 5, torch.Generator().manual_seed(0), record=False)
    assert final.states.shape == (1, 5, *model.shape) and final.log_probs.numel() == 0
    assert full.trainable_steps == 3
    assert torch.equal(final.samples, full.samples)
