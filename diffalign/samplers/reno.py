"""ReNO: reward-based noise optimisation, per sample (Eyring et al. 2024, arXiv:2406.04312).

For a deterministic few-step generator x0 = g(z) (:mod:`.noise_generator`), gradient ascent on the
initial noise of each sample, with its noise-norm regulariser:

    z <- z - lr * clip( grad_z [ -r(g(z)) + lambda * (||z||^2 / 2 - (d - 1) log ||z||) ] )

with the chi-norm regulariser of :func:`~diffalign.noise_space.chi_norm_regularizer`. The paper's
defaults: 50 iterations, SGD with Nesterov momentum 0.9, learning rate 5, gradient-norm clip 0.1,
lambda = 0.01; the output is the best-scoring iterate of each sample. Samples are optimised as one
batch, but every quantity is per sample (the objective is a sum of per-sample terms, the clip is
per sample and the optimisers are elementwise), so a sample's trajectory does not depend on the others.

**Iterations** follow ReNO's reference (``n_iters``): ``iterations`` is the number of evaluated iterates,
so 50 iterations take 49 gradient steps and the last iterate is scored but not stepped from. (Until
this was fixed, 50 iterations took 50 steps and evaluated 51 iterates.)

NFE convention (the same as :class:`~diffalign.RewardGuidance`): a backward pass through the
generator counts as one more pass. Each gradient step costs ``2 x steps x passes`` per sample
(forward + backward); the last iterate's forward costs ``steps x passes`` more. Reward evaluations
are never NFE.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..errors import DiffalignError, choice_error
from ..guidance.reward_guidance import clip_per_sample
from ..kernels import Kernel
from ..models.conditioning import Condition, index_condition
from ..noise_space import chi_norm_regularizer
from .base import SampleOutput, Sampler, check_positive_int, too_small_budget
from .noise_generator import check_reward_gradient, deterministic_kernel, differentiable_reward, generate, generator_passes
from .progress import progress_bar
from .registry import SAMPLERS
from .rollout import initial_noise

OPTIMIZERS = ("sgd", "adam")


def reno_cost(iterations: int, passes: int) -> int:
    """NFE per sample: forward + backward for each of the ``iterations - 1`` steps, then the last forward."""
    return (2 * iterations - 1) * passes


@SAMPLERS.register("reno")
class ReNOSampler(Sampler):
    """Per-sample optimisation of the initial noise of a few-step generator toward high reward.

    Args:
        iterations: evaluated iterates per sample, ``iterations - 1`` gradient steps (50 in the paper).
        optimizer: "sgd" (Nesterov momentum) or "adam".
        lr: learning rate (5 in the paper, for SGD).
        momentum: SGD's Nesterov momentum.
        max_grad_norm: clip each sample's gradient to this L2 norm (None: off).
        regularization: lambda, the weight of the chi-norm regulariser (0 disables it).
        keep_best: return each sample's best-scoring iterate (the paper) rather than the last.
        kernel: the deterministic kernel of g (default "euler").
        progress, batch_size: as for every sampler (``batch_size`` samples are optimised together).

    ``steps`` of :meth:`sample` is the generator's step count (1-4 for ``digits-fast``). ``out.info``
    holds ``reward_trace`` (the mean reward of the current iterates at each iteration, 0..iterations - 1),
    ``initial_rewards``, ``noise_norms`` (||z|| of the returned noises) and ``noise_shift_norms``
    (||z - z_initial||, comparable to HyperNoise's ||f(z)||).
    """

    name = "reno"
    needs_reward = True

    def __init__(
        self,
        iterations: int = 50,
        optimizer: str = "sgd",
        lr: float = 5.0,
        momentum: float = 0.9,
        max_grad_norm: Optional[float] = 0.1,
        regularization: float = 0.01,
        keep_best: bool = True,
        kernel: Optional[str | Kernel] = "euler",
        progress: Optional[bool] = None,
        batch_size: int = 512,
    ):
        super().__init__(progress=progress, batch_size=batch_size)
        self.iterations = check_positive_int("iterations", iterations)
        if optimizer not in OPTIMIZERS:
            raise choice_error("optimizer", optimizer, list(OPTIMIZERS))
        self.optimizer = optimizer
        for key, value in (("lr", lr), ("momentum", momentum), ("regularization", regularization)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
                raise DiffalignError(f"{key} must be a non-negative number, got {value!r}")
        if not lr > 0:
            raise DiffalignError(f"lr must be positive, got {lr!r}")
        if max_grad_norm is not None and not (isinstance(max_grad_norm, (int, float)) and max_grad_norm > 0):
            raise DiffalignError(f"max_grad_norm must be a positive number or None, got {max_grad_norm!r}")
        self.lr, self.momentum, self.regularization = float(lr), float(momentum), float(regularization)
        self.max_grad_norm = None if max_grad_norm is None else float(max_grad_norm)
        self.keep_best = bool(keep_best)
        self.kernel = kernel

    def _make_optimizer(self, z: torch.Tensor) -> torch.optim.Optimizer:
        if self.optimizer == "sgd":
            return torch.optim.SGD([z], lr=self.lr, momentum=self.momentum, nesterov=self.momentum > 0)
        return torch.optim.Adam([z], lr=self.lr)

    def _sample(self, model, reward, num_samples, nfe, steps, generator, cond):
        reward = differentiable_reward(reward, self.name)
        kernel = deterministic_kernel(model, self.kernel, self.name)
        encoded = model.encode_condition(cond, num_samples)
        passes = generator_passes(model, encoded, steps)
        needed = num_samples * reno_cost(self.iterations, passes)
        if nfe is not None and needed > nfe:
            raise too_small_budget(self.name, nfe, needed, f"{num_samples} samples x {self.iterations} iterations of {steps} steps (forward + backward)")
        parts = []
        starts = range(0, num_samples, self.batch_size)
        for start in progress_bar(starts, progress=False if len(starts) == 1 else self.progress, desc="reno"):
            stop = min(num_samples, start + self.batch_size)
            z = initial_noise(model, stop - start, generator)
            parts.append(self._optimise(model, reward, z, index_condition(encoded, slice(start, stop)), steps, kernel, passes))
        samples, rewards, noises, initial, traces, shifts = (torch.cat(p) for p in zip(*parts))
        weights = torch.tensor([stop - start for start, stop in _chunks(num_samples, self.batch_size)], dtype=torch.float64)
        trace = (traces.reshape(len(weights), -1).double() * weights[:, None]).sum(0) / weights.sum()
        info = {"reward_trace": trace.tolist(), "initial_rewards": initial, "noise_norms": noises.flatten(1).norm(dim=1),
                "noise_shift_norms": shifts,
                "iterations": self.iterations, "optimizer": self.optimizer}
        return SampleOutput(samples, rewards, nfe=0, info=info)

    def _optimise(self, model, reward, z: torch.Tensor, cond: Condition, steps: int, kernel: Kernel, passes: int):
        start = z
        z = z.clone().requires_grad_(True)
        optimizer = self._make_optimizer(z)
        best_x = best_z = best_r = None
        trace = []
        bar = self.progress_bar(range(self.iterations), desc="reno iterations", leave=False)
        for it in bar:
            with torch.enable_grad():
                x0 = generate(model, z, cond, steps, kernel)
                values = reward(model.decode(x0)).reshape(-1)
                check_reward_gradient(values, reward, self.name)
                current = values.detach().float()
                trace.append(current.mean())
                if best_r is None:
                    best_x, best_z, best_r, first = x0.detach(), z.detach().clone(), current, current
                elif self.keep_best:
                    better = current > best_r
                    view = (-1,) + (1,) * (x0.ndim - 1)
                    best_x = torch.where(better.reshape(view), x0.detach(), best_x)
                    best_z = torch.where(better.reshape(view), z.detach(), best_z)
                    best_r = torch.where(better, current, best_r)
                else:
                    best_x, best_z, best_r = x0.detach(), z.detach().clone(), current
                if it == self.iterations - 1:  # the reference scores its last iterate without stepping from it
                    break
                objective = -values + self.regularization * chi_norm_regularizer(z)
                (grad,) = torch.autograd.grad(objective.sum(), z)
            model.count += len(z) * passes  # the backward pass through g (see the module docstring)
            optimizer.zero_grad(set_to_none=True)
            z.grad = clip_per_sample(grad, self.max_grad_norm)
            optimizer.step()
        return best_x, best_r, best_z, first, torch.stack(trace), (best_z - start).flatten(1).norm(dim=1)


def _chunks(n: int, size: int):
    return [(start, min(n, start + size)) for start in range(0, n, size)]
