"""Flow-DPO (flow models) and Diffusion-DPO (eps / v models) -- one trainer, the model decides.

Loss (Liu et al. 2025, arXiv 2501.13918, Sec. 4.1; Wallace et al. 2024, arXiv 2311.12908, eq. 14):

    -log sigmoid(-(beta_t / 2) [(e_w - e_w^ref) - (e_l - e_l^ref)]),   e = mean ||target - prediction||^2

with winner and loser noised by the **same** noise at the **same** t, the reference = the same network
with its LoRA disabled, and beta_t = beta (constant, the paper's choice) or beta (1 - t)^2 (the
derivation's, which the paper found to reward-hack). Errors are per-element means (flow_grpo's SD3.5
convention), so beta is independent of the image size.

Pairs come from a file (``pairs_file``: safetensors with ``winners``, ``losers`` and optional ``cond``)
or online: each group of ``group_size`` samples of the current policy gives one pair, its best vs its
worst under the reward.
"""

from __future__ import annotations

import torch

from ..errors import DiffalignError
from ..models.conditioning import index_condition
from ..samplers.rollout import resolve_kernel
from .base import Trainer
from .flow_dpo_config import FlowDPOConfig
from .losses import dpo_loss, finite_mean_std, preference_pairs, timestep_beta
from .regression import generate, prediction_error, score, training_times
from .seeding import seeded_generator


class FlowDPOTrainer(Trainer):
    name = "flow_dpo"
    config_class = FlowDPOConfig
    needs_reference = True
    progress_keys = ("loss", "accuracy", "reward")

    def __init__(self, config: FlowDPOConfig, output_dir, accelerator=None):
        super().__init__(config, output_dir, accelerator)
        self.kernel = resolve_kernel(self.model, config.kernel, **config.kernel_options)
        self.pairs = _read_pairs(config.pairs_file, self.model.shape) if config.pairs_file else None

    def make_micro_batch(self, step, index, generator):
        c = self.config
        pair_cond = None
        if self.pairs is not None:
            winners, losers, labels, rewards = self._file_pairs(step, index)
        else:
            winners, losers, pair_cond, rewards = self._online_pairs(step, index, generator)
            labels = None
        draws = c.noise_draws
        winners, losers = winners.repeat_interleave(draws, 0), losers.repeat_interleave(draws, 0)
        n = winners.shape[0]
        noise = torch.randn((n, *self.model.shape), generator=generator).to(winners)
        t = training_times(n, generator)
        if pair_cond is not None:  # each pair is two samples of one prompt: both sides keep its condition
            cond = index_condition(pair_cond, torch.arange(c.pairs_per_micro_batch).repeat_interleave(draws))
        else:
            cond = self.model.encode_condition(labels.repeat_interleave(draws, 0) if labels is not None else self.cond, n)
        return {"winners": winners, "losers": losers, "noise": noise, "t": t, "cond": cond, **rewards}

    def _online_pairs(self, step, index, generator):
        c = self.config
        n = c.pairs_per_micro_batch * c.group_size
        # a pair is the best and worst of group_size samples of one prompt
        rows = self.rollout_rows(step, index, c.pairs_per_micro_batch, c.group_size)
        samples = generate(self.policy(self.model), self.kernel, c.sample_steps, rows.cond, n, generator)
        rewards = score(self.reward, self.model, samples, rows.prompts, rows.metadata).view(c.pairs_per_micro_batch, c.group_size)
        best, worst, _ = preference_pairs(rewards)  # finite rewards only; a group without a pair pairs a sample with itself (zero gradient)
        starts = torch.arange(c.pairs_per_micro_batch) * c.group_size
        finite = torch.where(torch.isfinite(rewards), rewards, torch.nan)
        gaps = (finite.nan_to_num(-float("inf")).max(1).values - finite.nan_to_num(float("inf")).min(1).values)
        stats = {"reward": finite_mean_std(rewards)[0], "reward_gap": finite_mean_std(gaps)[0]}
        pair_cond = None
        if self.train_prompts is not None and rows.cond is not None:
            pair_cond = index_condition(rows.cond, starts.to(next(iter(rows.cond.values())).device))
        return samples[starts + best.cpu()], samples[starts + worst.cpu()], pair_cond, stats

    def _file_pairs(self, step, index):
        c = self.config
        total = self.pairs["winners"].shape[0]
        start = (step * self.micro_batches_per_step + index) * c.pairs_per_micro_batch
        positions = torch.arange(start, start + c.pairs_per_micro_batch)
        epochs = positions // total
        rows = torch.empty_like(positions)
        for epoch in epochs.unique().tolist():  # one epoch, or two at an epoch boundary
            here = epochs == epoch
            rows[here] = self._epoch_order(epoch)[positions[here] % total]
        device = self.accelerator.device
        labels = self.pairs["cond"][rows] if "cond" in self.pairs else None
        return self.pairs["winners"][rows].to(device), self.pairs["losers"][rows].to(device), labels, {}

    def _epoch_order(self, epoch: int) -> torch.Tensor:
        # the shuffled order of an epoch depends on (seed, epoch) only: resume continues the data order
        cache = getattr(self, "_orders", {})
        if epoch not in cache:
            cache = {epoch: torch.randperm(self.pairs["winners"].shape[0], generator=seeded_generator(self.config.seed, 7, epoch))}
            self._orders = cache
        return cache[epoch]

    def data_position(self, step):
        return step * self.micro_batches_per_step * self.config.pairs_per_micro_batch

    def compute_loss(self, batch, update):
        c = self.config
        n = batch["winners"].shape[0]
        x0 = torch.cat([batch["winners"], batch["losers"]])
        noise = torch.cat([batch["noise"], batch["noise"]])  # same noise and t for winner and loser
        t = torch.cat([batch["t"], batch["t"]])
        cond = index_condition(batch["cond"], torch.arange(n).repeat(2)) if batch["cond"] is not None else None
        policy = prediction_error(self.model, x0, noise, t, cond)
        with torch.no_grad(), self.reference_policy() as reference:
            ref = prediction_error(reference, x0, noise, t, cond)
        beta = c.beta if c.beta_schedule == "constant" else timestep_beta(c.beta, batch["t"], self.model.prediction, self.model.schedule).to(policy.device)
        out = dpo_loss(policy[:n], policy[n:], ref[:n], ref[n:], beta)
        metrics = {
            "loss": out.loss.mean().item(),
            "accuracy": (out.margin > 0).float().mean().item(),  # policy prefers the winner more than the reference does
            "margin": out.margin.mean().item(),
        }
        metrics.update({key: batch[key] for key in ("reward", "reward_gap") if key in batch})
        return out.loss.mean(), metrics


def _read_pairs(path, shape) -> dict[str, torch.Tensor]:
    from pathlib import Path

    from ..models.loading import load_safetensors

    pairs = load_safetensors(Path(path))
    missing = {"winners", "losers"} - pairs.keys()
    if missing:
        raise DiffalignError(f"pairs file {path} lacks {sorted(missing)}; it needs 'winners' and 'losers' (and optionally 'cond')")
    w, l = pairs["winners"], pairs["losers"]
    if w.shape != l.shape or tuple(w.shape[1:]) != tuple(shape):
        raise DiffalignError(f"pairs file {path}: winners {tuple(w.shape)} and losers {tuple(l.shape)} must both be (N, {', '.join(map(str, shape))})")
    if "cond" in pairs and pairs["cond"].shape[0] != w.shape[0]:
        raise DiffalignError(f"pairs file {path}: 'cond' has {pairs['cond'].shape[0]} rows for {w.shape[0]} pairs")
    return {k: v.float() if k != "cond" else v.long() for k, v in pairs.items()}
