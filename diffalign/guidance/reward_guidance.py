"""`RewardGuidance`: steer any denoiser with the gradient of a reward (DPS-style or Flow-NRG).

The target is the tilted distribution ``p(x0) exp(w r(x0))`` (Flow-NRG, Liu et al. 2025,
arXiv:2501.13918, Sec. 4.3). Its score at time t is the base score plus ``w grad_{x_t} V_t(x_t)``, and
since ``score = -eps / sigma`` the shift is, at fixed x_t,

    eps~ = eps - w sigma(t) g,        x0~ = x0 + w sigma(t)^2 / alpha(t) g,        g = grad_{x_t} r.

In the flow velocity v = eps - x0 of the rectified-flow schedule (alpha = 1 - t, sigma = t) this is
Flow-NRG's ``v~ = v - w t / (1 - t) g``; for VP models it is the score shift of classifier guidance
(Dhariwal & Nichol 2021, eq. (11) with s = w). Where alpha(t) = 0 (a flow model at t = 1) the shift is
undefined and skipped, as in the paper.

The gradient g comes from one of two sources:

* a **clean reward** at the denoiser's estimate: ``g = grad_{x_t} r(decode(x0_hat(x_t)))``, back through
  the decoder and the denoiser (Diffusion Posterior Sampling, Chung et al. 2023, arXiv:2209.14687,
  Alg. 1, with the reward as log-likelihood). For a Gaussian and a linear reward this is the exact
  tilted score: E[exp(w a.x0) | x_t] = exp(w a.x0_hat(x_t) + const);
* a **noisy reward model** r_phi(x_t, t) (Flow-NRG's reward model on noisy latents; see
  :mod:`diffalign.rewards.noisy`): ``g = grad_{x_t} r_phi``, with no denoiser or decoder in the loop.

NFE convention (the same in every benchmark): a backward pass through the denoiser counts as one more
pass, so clean-reward guidance costs ``2 x`` the wrapped model's passes per sample at every step where
it is active (forward + backward; 4 around a two-pass CFG). Noisy-reward guidance costs what the
wrapped model costs: reward evaluations are never counted as NFE, for any sampler.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional

import torch

from ..errors import DiffalignError
from ..models.conditioning import Condition
from ..models.denoiser import Denoiser, _time_batch
from ..models.prediction import Prediction
from ..models.wrappers import DenoiserWrapper
from ..prompting import current_prompt

#: the default per-sample clip of the reward gradient (``benchmarks/guidance_clip.py``: on ``digits``
#: unclipped or loosely clipped guidance at w = 3 turns samples into saturated noise)
DEFAULT_MAX_GRAD_NORM = 1.0
#: samples count as "off the data range" by this much beyond it (the decoder clamps them)
OFF_RANGE_MARGIN = 0.1
#: warn when more than this share of a guided run's sample values is off the data range
OFF_RANGE_WARN_SHARE = 0.1


class RewardGuidance(DenoiserWrapper):
    """Reward-gradient guidance as a denoiser wrapper: every sampler gets it for free.

    Wrap it around a :class:`~diffalign.CFGDenoiser` to guide after CFG (Flow-NRG's order):
    ``RewardGuidance(CFGDenoiser(model, 3.0), reward, scale=2.0)``.

    Args:
        inner: the denoiser to guide.
        reward: a clean reward (a registered name, a :class:`~diffalign.rewards.Reward` or any
            differentiable callable ``images -> (B,)``, evaluated at ``inner.decode(x0_hat)``), a noisy
            reward model (``da.rewards.get("noisy-reward", path=...)``), or a dict
            ``{reward: weight}`` of several of them guided as one objective ``sum_k weight_k r_k``.
        scale: the guidance weight w (the inverse temperature of the tilt); 0 is the unguided model.
        max_grad_norm: clip each sample's reward gradient to this L2 norm before scaling (default 1.0;
            None: off, the exact tilt). The step is ``scale * clipped gradient``, so on the digits
            models w = 3 unclipped, or clipped at 10, leaves the data range and decodes to saturated
            noise, while clip 1 gives the target class (``benchmarks/guidance_clip.py``). A finished run
            whose samples leave the data range warns (:meth:`sample_warnings`).
        t_start, t_stop: guide only while ``t_stop <= t <= t_start`` (t = 1 is noise).
    """

    #: scores its estimates against the prompt of the rows being denoised (:mod:`diffalign.prompting`)
    reads_prompt_scope = True

    def __init__(
        self,
        inner: Denoiser,
        reward: Any,
        scale: float = 1.0,
        max_grad_norm: Optional[float] = DEFAULT_MAX_GRAD_NORM,
        t_start: float = 1.0,
        t_stop: float = 0.0,
    ):
        super().__init__(inner)
        self.scale = _finite_number("scale", scale)
        if max_grad_norm is not None and not _finite_number("max_grad_norm", max_grad_norm) > 0:
            raise DiffalignError(f"max_grad_norm must be a positive number or None, got {max_grad_norm!r}")
        self.max_grad_norm = None if max_grad_norm is None else float(max_grad_norm)
        self.t_start, self.t_stop = _finite_number("t_start", t_start), _finite_number("t_stop", t_stop)
        if not 0.0 <= self.t_stop <= self.t_start <= 1.0:
            raise DiffalignError(f"need 0 <= t_stop <= t_start <= 1, got t_stop={t_stop!r}, t_start={t_start!r}")
        self.clean, self.noisy = split_objective(reward)

    # -- cost ------------------------------------------------------------------------------------
    def evals_for(self, cond: Condition, t: Optional[torch.Tensor] = None) -> int:
        passes = self.inner.evals_for(cond, t)
        if self.clean is None or self.scale == 0.0:
            return passes
        if t is not None and not bool(self.active(torch.as_tensor(t, dtype=torch.float64)).any()):
            return passes
        return 2 * passes  # forward + backward through the denoiser

    def active(self, t: torch.Tensor) -> torch.Tensor:
        """Where guidance applies: inside [t_stop, t_start] and where alpha(t) > 0."""
        t = t.to(torch.float64)
        alpha = torch.as_tensor(self.schedule.alpha(t), dtype=torch.float64)
        return (t >= self.t_stop) & (t <= self.t_start) & (alpha > 0)

    # -- the guided prediction -----------------------------------------------------------------------
    def predict(self, x, t, cond: Condition = None) -> Prediction:
        t = _time_batch(t, x)
        active = self.active(t)
        if self.scale == 0.0 or not bool(active.any()):
            return self.inner.predict(x, t, cond)
        if torch.is_inference_mode_enabled():
            raise DiffalignError("reward guidance needs gradients; run it under torch.no_grad(), not torch.inference_mode()")
        if self.clean is not None:
            pred, grad = self._clean_gradient(x, t, cond)
        else:
            pred, grad = self.inner.predict(x, t, cond), torch.zeros_like(x)
        for weight, model in self.noisy:
            grad = grad + weight * self._noisy_gradient(model, x, t, cond)
        grad = clip_per_sample(grad, self.max_grad_norm)
        return shift_by_score(pred, self.scale * grad, active)

    def _clean_gradient(self, x, t, cond) -> tuple[Prediction, torch.Tensor]:
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            pred = self.inner.predict(x_in, t, cond)
            images = self.inner.decode(pred.x0)
            scope = current_prompt()
            if scope is None:
                values = self.clean(images)
            else:  # a prompt set: the sampler denoises one prompt's rows at a time under guidance
                batch = images.shape[0]
                values = self.clean(images, prompts=scope.prompts(batch), metadata=scope.metadata_rows(batch))
            _check_has_gradient(values, self.clean)
            # per-sample rewards summed: each row's gradient is its own reward's (rows never mix)
            (grad,) = torch.autograd.grad(values.sum(), x_in)
        detached = Prediction(x, t, pred.x0.detach(), pred.eps.detach(), pred.schedule, pred.alpha, pred.sigma)
        return detached, grad.to(x.dtype)

    @staticmethod
    def _noisy_gradient(model, x, t, cond) -> torch.Tensor:
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            values = model.score_noisy(x_in, t, cond)
            _check_has_gradient(values, model)
            (grad,) = torch.autograd.grad(values.sum(), x_in)
        return grad.to(x.dtype)

    # -- checks on finished samples -------------------------------------------------------------------
    def sample_warnings(self, samples: torch.Tensor) -> list[str]:
        """Warn when guidance pushed the samples off the data range (free: one pass over the samples).

        Too large a step ``w * g`` (a large scale, or an unclipped gradient) sends x far outside the
        data, and the decoder's clamp turns it into saturated noise whose reward can still look
        plausible; ``benchmarks/guidance_clip.py`` measures the share of such values per setting.
        """
        found = super().sample_warnings(samples)
        share = off_range_fraction(samples, self.data_range)
        if self.scale != 0.0 and share is not None and share > OFF_RANGE_WARN_SHARE:
            low, high = self.data_range
            found.append(
                f"reward guidance (scale={self.scale:g}, max_grad_norm={self.max_grad_norm}) pushed {share:.0%} of the "
                f"samples' values outside the data range [{low:g}, {high:g}]: decoded, they are saturated noise, not "
                "data; lower the scale or the gradient clip (README: 'Choosing scale and clip')"
            )
        return found

    def extra_repr(self) -> str:
        return f"scale={self.scale}, max_grad_norm={self.max_grad_norm}, t_start={self.t_start}, t_stop={self.t_stop}"


def shift_by_score(pred: Prediction, score_shift: torch.Tensor, active: torch.Tensor) -> Prediction:
    """The prediction whose score is the old one plus ``score_shift`` (rows where ``active``).

    score = -eps / sigma, so eps -= sigma * shift; x0 then follows from x_t = alpha x0 + sigma eps.
    """
    t = pred.t.to(torch.float64)
    alpha = torch.as_tensor(pred.schedule.alpha(t), dtype=torch.float64).to(pred.x.device)
    sigma = torch.as_tensor(pred.schedule.sigma(t), dtype=torch.float64).to(pred.x.device)
    safe_alpha = torch.where(active, alpha, torch.ones_like(alpha))
    eps_coef = torch.where(active, sigma, torch.zeros_like(sigma))
    x0_coef = torch.where(active, sigma.square() / safe_alpha, torch.zeros_like(sigma))
    view = (-1,) + (1,) * (pred.x.ndim - 1)
    eps = pred.eps - eps_coef.reshape(view).to(pred.x.dtype) * score_shift
    x0 = pred.x0 + x0_coef.reshape(view).to(pred.x.dtype) * score_shift
    return Prediction(pred.x, pred.t, x0, eps, pred.schedule, pred.alpha, pred.sigma)


def off_range_fraction(samples: torch.Tensor, data_range: Optional[tuple[float, float]],
                       margin: float = OFF_RANGE_MARGIN) -> Optional[float]:
    """Share of the values of ``samples`` (model space) more than ``margin`` outside ``data_range``
    (None where the model has no data range, e.g. latents)."""
    if data_range is None or samples.numel() == 0:
        return None
    low, high = data_range
    values = samples.detach()
    outside = (values < low - margin) | (values > high + margin)
    return outside.float().mean().item()


def clip_per_sample(grad: torch.Tensor, max_norm: Optional[float]) -> torch.Tensor:
    """Scale each row down to L2 norm ``max_norm`` (rows are clipped independently)."""
    if max_norm is None:
        return grad
    norms = grad.flatten(1).norm(dim=1).clamp(min=1e-12)
    factor = (max_norm / norms).clamp(max=1.0)
    return grad * factor.reshape((-1,) + (1,) * (grad.ndim - 1)).to(grad.dtype)


# -- the objective ---------------------------------------------------------------------------------
def is_noisy_reward(obj: Any) -> bool:
    """A reward model on noisy inputs: offers ``score_noisy(x_t, t, cond) -> (B,)``."""
    return bool(getattr(obj, "takes_noisy_input", False)) and callable(getattr(obj, "score_noisy", None))


def split_objective(reward: Any) -> tuple[Optional[Any], list[tuple[float, Any]]]:
    """(one clean reward for the x0-hat gradient or None, [(weight, noisy reward model)]).

    A dict ``{reward: weight}`` becomes a weighted sum of its clean terms (one backward pass serves
    them all) plus its weighted noisy terms.
    """
    from ..rewards import as_reward

    terms = reward.items() if isinstance(reward, dict) else [(reward, 1.0)]
    if isinstance(reward, dict) and not reward:
        raise DiffalignError("reward guidance got an empty dict of rewards; give {reward: weight, ...}")
    clean, clean_weights, noisy = [], [], []
    for term, weight in terms:
        weight = _finite_number("reward weight", weight)
        if is_noisy_reward(term):
            noisy.append((weight, term))
        else:
            term = as_reward(term)
            _refuse_non_differentiable(term)
            clean.append(term)
            clean_weights.append(weight)
    if not clean:
        return None, noisy
    if len(clean) == 1 and clean_weights[0] == 1.0:
        return clean[0], noisy
    return WeightedObjective(clean, clean_weights), noisy


class WeightedObjective(torch.nn.Module):
    """``sum_k w_k r_k(x)`` for guidance: like the ``weighted-sum`` reward, but for any batched input
    (2-D oracle points as well as images) and in the input's own precision."""

    name = "weighted objective"

    def __init__(self, rewards: list, weights: list[float]):
        super().__init__()
        self.terms = torch.nn.ModuleList(rewards)
        self.weights = list(weights)

    def forward(self, x: torch.Tensor, prompts=None, metadata=None) -> torch.Tensor:
        if prompts is None:
            return sum(weight * term(x) for weight, term in zip(self.weights, self.terms))
        return sum(weight * term(x, prompts=prompts, metadata=metadata) for weight, term in zip(self.weights, self.terms))


def _refuse_non_differentiable(reward: Any) -> None:
    bad = declared_non_differentiable(reward)
    if bad:
        raise DiffalignError(
            f"reward guidance needs a differentiable reward, but {', '.join(map(repr, bad))} is not "
            "(e.g. JPEG compressibility); use a sampler that needs only reward values (best-of-n, sir, smc, dts) "
            "or a noisy reward model"
        )


def declared_non_differentiable(reward) -> list[str]:
    """Names of the parts of ``reward`` that declare ``differentiable = False``.

    A plain callable that declares nothing is trusted here and checked when first called (its output
    must carry a gradient); a :class:`~diffalign.rewards.Reward` class declares it explicitly.
    """
    from ..rewards import CallableReward, WeightedSum

    if isinstance(reward, CallableReward):
        return [reward.name] if getattr(reward.fn, "differentiable", None) is False else []
    if isinstance(reward, WeightedSum):
        return [name for term in reward.terms for name in declared_non_differentiable(term)]
    return [] if reward.differentiable else [reward.name]


def _check_has_gradient(values: torch.Tensor, reward: Any) -> None:
    if not (torch.is_tensor(values) and values.requires_grad):
        name = getattr(reward, "name", None) or type(reward).__name__
        raise DiffalignError(
            f"reward guidance: reward {name!r} returned values with no gradient with respect to its input "
            "(it is not differentiable, or detaches); use a differentiable reward or a sampler that needs only values"
        )


def _finite_number(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise DiffalignError(f"{name} must be a finite number, got {value!r}")
    return float(value)
