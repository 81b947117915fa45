"""The maths of the trainers as pure functions of tensors (no models, no state).

* :func:`dpo_loss` -- Flow-DPO (Liu et al. 2025, arXiv 2501.13918, eq. for L_DPO with velocity errors)
  and Diffusion-DPO (Wallace et al. 2024, arXiv 2311.12908, eq. 14 with eps errors): the same form on
  the network's own prediction target.
* :func:`timestep_beta` -- Diffusion-DPO's constant beta on eps errors rewritten for the network's own
  target: beta (1 - t)^2 for rectified flows (Liu et al. 2025, Sec. 4.1; the paper prefers a constant
  beta because this one reward-hacks), 1 for eps, alpha^2 for VP v, the SNR for x0.
* :func:`rwr_weights` / :func:`weighted_regression_loss` -- Flow-RWR, E[exp(r / tau) ||v - v_theta||^2]
  with the weights divided by the batch's largest (so they lie in (0, 1]), or its per-group softmax.
* :func:`group_advantages`, :func:`ppo_clip_loss`, :func:`gaussian_kl` -- GRPO on a stochastic sampler
  (Flow-GRPO, Liu et al. 2025, arXiv 2505.05470, eqs. 4-6; DDPO, Black et al. 2023).
* :func:`preference_loss` -- Bradley-Terry, or Rao-Kupper with ties, for the noisy reward model.
"""

from __future__ import annotations

import math
import warnings
from typing import NamedTuple

import torch
import torch.nn.functional as F

from ..errors import DiffalignError

RWR_MODES = ("exp", "group-softmax")


def per_sample_squared_error(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over all non-batch elements of (prediction - target)^2, in float32 or wider."""
    diff = prediction.float() - target.float()
    return diff.square().flatten(1).mean(1)


class DPOOutput(NamedTuple):
    loss: torch.Tensor  # (B,) per-pair loss
    margin: torch.Tensor  # (B,) the argument of the sigmoid; > 0 means the policy prefers the winner more than the reference does


def dpo_loss(
    policy_error_w: torch.Tensor,
    policy_error_l: torch.Tensor,
    reference_error_w: torch.Tensor,
    reference_error_l: torch.Tensor,
    beta,
) -> DPOOutput:
    """-log sigmoid(-(beta / 2) [(e_w - e_w^ref) - (e_l - e_l^ref)]) per pair.

    Errors are squared prediction errors of the winner (w) and loser (l) under the policy and the
    reference, computed with shared noise and t. ``beta`` is a float or a (B,) tensor (timestep beta).
    With policy = reference the margin is 0 and the loss is log 2.
    """
    margin = -0.5 * beta * ((policy_error_w - reference_error_w) - (policy_error_l - reference_error_l))
    return DPOOutput(-F.logsigmoid(margin), margin)


def timestep_beta(beta: float, t: torch.Tensor, prediction: str = "flow", schedule=None) -> torch.Tensor:
    """beta_t = beta w(t): Diffusion-DPO's constant beta on eps errors, rewritten for the network's own target.

    Diffusion-DPO (Wallace et al. 2024, arXiv 2311.12908, eq. 14, with a constant weighting) compares
    eps errors. A network that predicts another target y has eps - eps_theta = (d eps / d y)(y - y_theta),
    since eps is linear in y at fixed x_t, so the same loss on y errors needs w(t) = (d eps / d y)^2:

    * ``eps``: w = 1, so the timestep schedule *is* the constant one;
    * ``x0``: eps = (x - alpha x0) / sigma, w = (alpha / sigma)^2 (the SNR);
    * ``v`` (v = alpha eps - sigma x0): w = (alpha / (alpha^2 + sigma^2))^2, i.e. alpha^2 on a VP schedule;
    * ``flow`` (u = alpha' x0 + sigma' eps): w = (alpha / (alpha sigma' - sigma alpha'))^2, which on the
      rectified-flow schedule alpha = 1 - t, sigma = t is (1 - t)^2 -- Flow-DPO's beta (1 - t)^2
      (Liu et al. 2025, arXiv 2501.13918, Sec. 4.1), which the paper found to reward-hack.

    ``schedule`` defaults to the rectified-flow one. Applying (1 - t)^2 to an eps-model (the old rule)
    down-weighted its high-noise pairs 100x at t = 0.9 instead of leaving them at 1.
    """
    from ..models.prediction import check_prediction_kind

    check_prediction_kind(prediction)
    t64 = t.detach().to(torch.float64)
    if schedule is None:
        a, s, da, ds = 1.0 - t64, t64, -torch.ones_like(t64), torch.ones_like(t64)
    else:
        a, s = schedule.alpha(t64).to(torch.float64), schedule.sigma(t64).to(torch.float64)
        da, ds = (schedule.d_alpha(t64).to(torch.float64), schedule.d_sigma(t64).to(torch.float64)) if prediction == "flow" else (None, None)
    if prediction == "eps":
        weight = torch.ones_like(t64)
    elif prediction == "x0":
        weight = (a / s).square()
    elif prediction == "v":
        weight = (a / (a.square() + s.square())).square()
    else:
        weight = (a / (a * ds - s * da)).square()
    return (beta * weight).float()


def rwr_weights(rewards: torch.Tensor, temperature: float, mode: str = "exp", group_size: int | None = None) -> torch.Tensor:
    """Per-sample regression weights; what they mean:

    ``"exp"``: w_i = exp((r_i - max_j r_j) / tau) over the batch given (one micro-batch). These are
    Flow-RWR's exp(r / tau) weights (Liu et al. 2025, arXiv 2501.13918, Sec. 4.1; Peng et al. 2019)
    times the positive constant exp(-max r / tau): the relative weights of any two samples are the
    paper's, the best sample weighs 1 and every weight lies in (0, 1]. Subtracting the maximum is why
    ``rwr_weights([90, 91], 1)`` is (e^-1, 1) instead of (inf, inf), and why the step size no longer
    grows as exp(mean r / tau) when every reward shifts up.
    ``"group-softmax"``: w = G softmax_group(r / tau), normalised within each consecutive group of
    ``group_size`` samples (same prompt), so every group's weights average to 1 over its finite
    members (softmax subtracts the group maximum internally, so it never overflows either).
    Non-finite rewards get weight 0 (:func:`finite_rewards`).
    """
    if temperature <= 0:
        raise DiffalignError(f"RWR temperature must be > 0, got {temperature!r}")
    if mode not in RWR_MODES:
        raise DiffalignError(f"unknown RWR weighting {mode!r}; valid choices: {', '.join(RWR_MODES)}")
    # float64: at a small tau, (r - max) / tau of float32 rewards loses the low bits that decide ratios
    scaled = rewards.to(torch.float64) / temperature
    # non-finite rewards weigh 0 and take no part in the maximum or the softmax (finite_rewards' policy)
    finite = finite_rewards(rewards, "RWR")
    scaled = torch.where(finite, scaled, torch.full_like(scaled, -math.inf))
    if mode == "exp":
        if not bool(finite.any()):
            return torch.zeros_like(scaled).float()
        return (scaled - scaled[finite].max()).exp().float()
    if not group_size or rewards.numel() % group_size:
        raise DiffalignError(f"group-softmax needs a group_size dividing the batch ({rewards.numel()}), got {group_size!r}")
    grouped, count = scaled.view(-1, group_size), finite.view(-1, group_size).sum(1, keepdim=True)
    weights = torch.where(count > 0, grouped.softmax(-1) * count, torch.zeros_like(grouped))
    return torch.nan_to_num(weights, nan=0.0).reshape(-1).float()


def weighted_regression_loss(errors: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """mean_i w_i e_i with the weights treated as constants."""
    return (weights.detach() * errors).mean()


class NonFiniteRewardWarning(UserWarning):
    """Some rewards of a training batch were NaN or inf and were dropped from their groups."""


def finite_rewards(rewards: torch.Tensor, method: str = "training") -> torch.Tensor:
    """The mask of finite rewards; warns once per call, naming how many were dropped.

    **Policy** (issue 22): a NaN or +-inf reward says nothing usable about its sample, and one of
    them turns a whole group's statistics into NaN (and from there the loss and the weights). Such
    samples are *dropped from their group*: the group's statistics use its finite members only, and
    the dropped sample gets advantage 0 (GRPO) or weight 0 (RWR) and is never a DPO winner or loser.
    """
    finite = torch.isfinite(rewards)
    dropped = int((~finite).sum())
    if dropped:
        warnings.warn(f"{method}: {dropped} of {rewards.numel()} rewards were NaN or inf; dropped from their groups "
                      "(advantage/weight 0, never a preference pair)", NonFiniteRewardWarning, stacklevel=3)
    return finite


def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """(r - mean_group) / (std_group + eps) for consecutive groups of ``group_size`` (GRPO).

    std is the population std (ddof = 0), as Flow-GRPO's per-prompt ``np.std`` (Liu et al. 2025,
    arXiv 2505.05470, eq. 4); the sample std (ddof = 1) would shrink every advantage by
    sqrt((G - 1) / G), 0.71 at G = 2. A group whose rewards are all equal gets advantage 0 (it
    carries no preference). Non-finite rewards are dropped from their group (:func:`finite_rewards`):
    mean and std are over the finite members, the dropped sample's advantage is 0, and a group
    with fewer than 2 finite members gets 0 throughout.
    """
    if group_size < 2 or rewards.numel() % group_size:
        raise DiffalignError(f"group_size must be >= 2 and divide the batch ({rewards.numel()}), got {group_size!r}")
    grouped = rewards.to(torch.float64).view(-1, group_size)
    finite = finite_rewards(grouped, "GRPO")
    count = finite.sum(1, keepdim=True)
    values = torch.where(finite, grouped, torch.zeros_like(grouped))
    mean = values.sum(1, keepdim=True) / count.clamp(min=1)
    centred = torch.where(finite, grouped - mean, torch.zeros_like(grouped))
    std = (centred.square().sum(1, keepdim=True) / count.clamp(min=1)).sqrt()
    advantages = torch.where(count >= 2, centred / (std + eps), torch.zeros_like(centred))
    return advantages.reshape(-1).float()


def preference_pairs(grouped_rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Online DPO pairs: per group (row) the index of its best and worst *finite* reward, and whether
    the row has a pair at all (two finite rewards that differ). ``argmax`` alone picks NaN as the winner."""
    finite = finite_rewards(grouped_rewards, "DPO")
    r = grouped_rewards.to(torch.float64)
    best = torch.where(finite, r, torch.full_like(r, -math.inf)).argmax(1)
    worst = torch.where(finite, r, torch.full_like(r, math.inf)).argmin(1)
    valid = (finite.sum(1) >= 2) & (r.gather(1, best[:, None]) > r.gather(1, worst[:, None])).squeeze(1)
    return best, worst, valid


class PPOOutput(NamedTuple):
    loss: torch.Tensor  # scalar
    ratio: torch.Tensor  # (B,) pi_theta / pi_old
    clipped_fraction: torch.Tensor  # scalar: share of samples where the clip was active
    # scalar: mean_i |A_i rho_i|, the weight of each sample's log-prob gradient. The loss itself is
    # ~0 on-policy (advantages average to zero in each group), so this is the scale to watch.
    pg_scale: torch.Tensor


def ppo_clip_loss(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor, clip_range: float) -> PPOOutput:
    """PPO's clipped surrogate, mean_i max(-A_i rho_i, -A_i clip(rho_i, 1 - c, 1 + c)), rho = exp(lp - lp_old).

    ``log_prob`` and ``old_log_prob`` must use the same reduction over elements (see
    :meth:`~diffalign.kernels.GaussianStep.log_prob`); ``clip_range`` is on that scale.
    """
    ratio = torch.exp(log_prob - old_log_prob.detach())
    advantages = advantages.detach().to(ratio.dtype)
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip_range, 1.0 + clip_range)
    loss = torch.maximum(unclipped, clipped).mean()
    clipped_fraction = ((ratio - 1.0).abs() > clip_range).float().mean()
    return PPOOutput(loss, ratio.detach(), clipped_fraction, unclipped.detach().abs().mean())


def gaussian_kl(mean: torch.Tensor, reference_mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(N(mean, std^2) || N(reference_mean, std^2)), averaged over elements:
    mean((mean - reference_mean)^2) / (2 std^2). Both steps share the kernel's std, so this is exact.

    ``std`` is the step's whole std, g sqrt(dt) for the flow SDE. Flow-GRPO's KL term divides by
    g^2 alone (its ``std_dev_t``), so it equals dt times this one: its loss ``beta * KL`` is this
    trainer's ``kl_coef * KL`` with ``kl_coef = beta * dt`` (e.g. beta = 0.04 at 10 uniform steps is
    kl_coef = 0.004).
    """
    diff = mean.to(torch.float64) - reference_mean.to(torch.float64)
    std = std.to(torch.float64).expand(mean.shape)
    return (diff.square() / (2.0 * std.square())).flatten(1).mean(1)


def preference_loss(score_a: torch.Tensor, score_b: torch.Tensor, tie: torch.Tensor | None = None,
                    theta: float | None = None) -> torch.Tensor:
    """Per-pair loss of a reward model's scores on pairs where A is preferred to B (or tied).

    Without ``theta``: Bradley-Terry (Bradley & Terry 1952), ``-log sigmoid(r_A - r_B)``; ties are not
    modelled (``tie`` must be None or all False).
    With ``theta > 1``: Rao-Kupper ties (Rao & Kupper 1967; the loss of Liu et al. 2025, arXiv
    2501.13918, Sec. 3 with theta = 5):
        win: ``-log sigmoid(r_A - r_B - log theta)``,
        tie: ``-log sigmoid(r_A - r_B - log theta) - log sigmoid(r_B - r_A - log theta) - log(theta^2 - 1)``.
    """
    diff = score_a.float() - score_b.float()
    if theta is None:
        if tie is not None and bool(tie.any()):
            raise DiffalignError("Bradley-Terry has no ties; give theta > 1 for the Rao-Kupper tie model")
        return -F.logsigmoid(diff)
    if not theta > 1:
        raise DiffalignError(f"Rao-Kupper theta must be > 1, got {theta!r}")
    log_theta = math.log(theta)
    win = -F.logsigmoid(diff - log_theta)
    if tie is None:
        return win
    tied = win - F.logsigmoid(-diff - log_theta) - math.log(theta * theta - 1.0)
    return torch.where(tie.to(torch.bool), tied, win)


def finite_mean_std(rewards: torch.Tensor) -> tuple[float, float]:
    """(mean, std) of the finite rewards, for logging: a dropped NaN reward must not turn the logged
    reward into NaN (NaN when no reward is finite)."""
    finite = rewards[torch.isfinite(rewards)].double()
    if finite.numel() == 0:
        return float("nan"), float("nan")
    return finite.mean().item(), (finite.std().item() if finite.numel() > 1 else 0.0)
