"""The ``noisy_reward`` trainer: a reward model r_phi(x_t, t) fitted to preferences on noisy samples.

Flow-NRG (Liu et al. 2025, arXiv:2501.13918, Secs. 3 and 4.3): a reward model that reads noisy latents
gives guidance a value estimate at every noise level. It is trained on preference pairs (A preferred to
B, or tied), both noised with the **same** noise at the **same** t, with the Bradley-Terry loss or, with
``ties: true``, the Rao-Kupper loss (:func:`~diffalign.trainers.losses.preference_loss`).

Pairs come from

* base samples labelled by a clean reward: ``pool_size`` samples of the base model are drawn once and
  scored; each micro-batch draws random pairs of them and orders each pair by reward (a tie when the
  rewards differ by less than ``tie_margin``). A ``holdout_fraction`` of the samples never enters training;
* or a user's ``pairs_file`` (safetensors with ``winners``, ``losers`` and optionally a 0/1 ``tie``), whose
  last ``holdout_fraction`` of pairs is held out.

Only the reward network trains; the diffusion model is frozen and used to draw the base samples. The
final directory holds ``config.json`` + ``model.safetensors`` (load with
``da.rewards.get("noisy-reward", path=DIR)``) and ``eval.json``: held-out pairwise accuracy at each of
``eval_times``, with shared noise (the training protocol) and with independent noise.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import DiffalignError
from ..models.diffusers_adapters import PixelDecoder
from ..rewards.noisy_model import NoisyRewardNet
from ..samplers.rollout import resolve_kernel
from .base import Trainer
from .losses import preference_loss
from .noisy_reward_config import NoisyRewardConfig
from .regression import generate, score
from .seeding import seeded_generator

# generator keys of the one-off random choices (the micro-batches use (seed, step, index))
POOL_KEY, HOLDOUT_KEY, EVAL_KEY = 101, 102, 103
EVAL_FILE = "eval.json"


class PreferencePairs:
    """Pairs (a, b, tie) with a preferred to b unless tied: a fixed list, or drawn from scored samples."""

    def __init__(self, a=None, b=None, tie=None, samples=None, rewards=None, tie_margin=None):
        self.a, self.b, self.tie = a, b, tie
        self.samples, self.rewards, self.tie_margin = samples, rewards, tie_margin

    @classmethod
    def from_scored(cls, samples: torch.Tensor, rewards: torch.Tensor, tie_margin) -> "PreferencePairs":
        return cls(samples=samples, rewards=rewards, tie_margin=tie_margin)

    def __len__(self) -> int:
        return len(self.a) if self.a is not None else len(self.samples)

    def draw(self, n: int, generator: torch.Generator):
        if self.a is not None:
            rows = torch.randint(len(self.a), (n,), generator=generator)
            return self.a[rows], self.b[rows], self.tie[rows]
        i, j = torch.randint(len(self.samples), (2, n), generator=generator)
        return order_by_reward(self.samples, self.rewards, i, j, self.tie_margin)

    def fixed(self, n: int, generator: torch.Generator) -> "PreferencePairs":
        """A fixed list: these pairs themselves, or ``n`` pairs drawn once from the scored samples."""
        return self if self.a is not None else PreferencePairs(*self.draw(n, generator))


def order_by_reward(samples, rewards, i, j, tie_margin):
    """(preferred, other, tie) for index pairs (i, j); ties only when ``tie_margin`` is given."""
    first = rewards[i] >= rewards[j]
    a = torch.where(first, i, j)
    b = torch.where(first, j, i)
    tie = torch.zeros_like(first) if tie_margin is None else (rewards[i] - rewards[j]).abs() < tie_margin
    return samples[a], samples[b], tie


class NoisyRewardTrainer(Trainer):
    name = "noisy_reward"
    config_class = NoisyRewardConfig
    progress_keys = ("loss", "accuracy")

    def __init__(self, config: NoisyRewardConfig, output_dir, accelerator=None):
        super().__init__(config, output_dir, accelerator)
        self.train_pairs, self.heldout = self._pairs()
        self.evaluation: dict = {}

    # -- the network that trains -----------------------------------------------------------------------
    def _trainable_parameters(self):
        c = self.config
        self.model.requires_grad_(False)
        pixel = isinstance(getattr(self.model, "decoder", None), PixelDecoder)
        with torch.random.fork_rng(devices=[]):  # the initial weights depend on the seed alone
            torch.manual_seed(c.seed)
            self.reward_net = NoisyRewardNet(self.model.shape, c.hidden, c.time_features, "pixel" if pixel else "identity")
        self.reward_net.to(self.accelerator.device)
        return list(self.reward_net.parameters())

    def trainable_module(self):
        return self.reward_net

    # -- data --------------------------------------------------------------------------------------------
    def _pairs(self) -> tuple[PreferencePairs, PreferencePairs]:
        c = self.config
        if c.pairs_file:
            pairs = read_pairs_file(c.pairs_file, self.model.shape, c.ties)
            cut = len(pairs.a) - max(1, round(c.holdout_fraction * len(pairs.a)))
            if cut < 1:
                raise DiffalignError(f"pairs file {c.pairs_file} has {len(pairs.a)} pair(s): too few to hold out {c.holdout_fraction:g} of them")
            train = PreferencePairs(pairs.a[:cut], pairs.b[:cut], pairs.tie[:cut])
            return train, PreferencePairs(pairs.a[cut:], pairs.b[cut:], pairs.tie[cut:])
        kernel = resolve_kernel(self.model, c.kernel, **c.kernel_options)
        cond = self.model.encode_condition(self.cond, c.pool_size)
        samples = generate(self.model, kernel, c.sample_steps, cond, c.pool_size, seeded_generator(c.seed, POOL_KEY)).cpu()
        rewards = torch.cat([score(self.reward, self.model, chunk.to(self.accelerator.device)).cpu() for chunk in samples.split(512)])
        cut = c.pool_size - max(2, round(c.holdout_fraction * c.pool_size))
        margin = c.tie_margin if c.ties else None
        train = PreferencePairs.from_scored(samples[:cut], rewards[:cut], margin)
        held = PreferencePairs.from_scored(samples[cut:], rewards[cut:], margin)
        return train, held.fixed(c.holdout_pairs, seeded_generator(c.seed, HOLDOUT_KEY))

    def make_micro_batch(self, step, index, generator):
        c = self.config
        a, b, tie = self.train_pairs.draw(c.pairs_per_micro_batch, generator)
        n = a.shape[0]
        noise = torch.randn((n, *self.model.shape), generator=generator)  # one noise for both of a pair
        t = c.t_min + (c.t_max - c.t_min) * torch.rand(n, generator=generator, dtype=torch.float64)
        device = self.accelerator.device
        return {"a": a.to(device), "b": b.to(device), "tie": tie.to(device), "noise": noise.to(device), "t": t.to(device)}

    # -- loss --------------------------------------------------------------------------------------------
    def compute_loss(self, batch, update):
        c = self.config
        score_a, score_b = noisy_scores(self.reward_net, self.model.schedule, batch["a"], batch["b"], batch["noise"], batch["t"])
        tie = batch["tie"]
        loss = preference_loss(score_a, score_b, tie if c.ties else None, c.theta if c.ties else None)
        decisive = ~tie
        accuracy = (score_a > score_b)[decisive].float().mean().item() if bool(decisive.any()) else float("nan")
        return loss.mean(), {"loss": loss.mean().item(), "accuracy": accuracy}

    # -- the result ----------------------------------------------------------------------------------------
    def write_final(self, directory: Path) -> None:
        self.reward_net.save(directory)
        held = self.heldout
        evaluate = lambda shared: pairwise_accuracy(  # noqa: E731
            self.reward_net, self.model.schedule, held.a, held.b, held.tie, self.config.eval_times,
            seeded_generator(self.config.seed, EVAL_KEY), shared_noise=shared)
        self.evaluation = {"pairwise_accuracy": evaluate(True), "pairwise_accuracy_independent_noise": evaluate(False),
                           "heldout_pairs": int((~held.tie).sum())}
        (Path(directory) / EVAL_FILE).write_text(json.dumps(self.evaluation, indent=2))


def noisy_scores(net, schedule, a, b, noise, t):
    """r_phi of both members of each pair at x_t = alpha(t) x0 + sigma(t) noise, with shared noise and t."""
    x_a = schedule.add_noise(a, noise, t).to(a.dtype)
    x_b = schedule.add_noise(b, noise, t).to(b.dtype)
    scores = net(torch.cat([x_a, x_b]), torch.cat([t, t]))
    return scores[: len(a)], scores[len(a):]


@torch.no_grad()
def pairwise_accuracy(net, schedule, a, b, tie, times, generator, batch_size: int = 1024,
                      shared_noise: bool = True) -> dict[str, float]:
    """Held-out accuracy at each time: P(r_phi(a_t) > r_phi(b_t)) over decisive pairs (ties of the
    scores count one half). 0.5 is chance.

    ``shared_noise=True`` noises both members alike, as in training (the noise then cancels in a
    comparison, so this is the model's ranking of the clean pair seen through noise); ``False`` noises
    them independently, which is what a value estimate at x_t faces during guidance.
    """
    device = next(net.parameters()).device
    a, b = a[~tie], b[~tie]
    results = {}
    for time in times:
        noise = torch.randn(a.shape, generator=generator)
        noise_b = noise if shared_noise else torch.randn(a.shape, generator=generator)
        hits = 0.0
        for rows in torch.arange(len(a)).split(batch_size):
            t = torch.full((len(rows),), float(time), dtype=torch.float64, device=device)
            x_a = schedule.add_noise(a[rows].to(device), noise[rows].to(device), t)
            x_b = schedule.add_noise(b[rows].to(device), noise_b[rows].to(device), t)
            sa, sb = net(x_a, t), net(x_b, t)
            hits += ((sa > sb).float() + 0.5 * (sa == sb).float()).sum().item()
        results[f"{float(time):g}"] = hits / max(1, len(a))
    return results


def read_pairs_file(path, shape, ties: bool) -> PreferencePairs:
    from ..models.loading import load_safetensors

    data = load_safetensors(Path(path))
    missing = {"winners", "losers"} - data.keys()
    if missing:
        raise DiffalignError(f"pairs file {path} lacks {sorted(missing)}; it needs 'winners' and 'losers' (and optionally 'tie')")
    a, b = data["winners"].float(), data["losers"].float()
    if a.shape != b.shape or tuple(a.shape[1:]) != tuple(shape):
        raise DiffalignError(f"pairs file {path}: winners {tuple(a.shape)} and losers {tuple(b.shape)} must both be (N, {', '.join(map(str, shape))})")
    tie = data["tie"].bool().reshape(-1) if "tie" in data else torch.zeros(len(a), dtype=torch.bool)
    if len(tie) != len(a):
        raise DiffalignError(f"pairs file {path}: 'tie' has {len(tie)} entries for {len(a)} pairs")
    if bool(tie.any()) and not ties:
        raise DiffalignError(f"pairs file {path} marks {int(tie.sum())} tie(s); set ties: true (Rao-Kupper) to train on them")
    return PreferencePairs(a, b, tie)
