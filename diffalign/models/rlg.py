"""`RLGDenoiser`: Reinforcement Learning Guidance, a tunable mix of a base and an RL-tuned model.

RLG (arXiv:2508.21016, eq. (6)): ``s = (1 - w) s_base + w s_tuned`` is the score of
``p_base^(1-w) p_tuned^w``. When p_tuned is the KL-regularised RL optimum with coefficient beta, RLG at
weight w acts as that optimum with coefficient beta / w: w = 0 is the base model, w = 1 the tuned one,
0 < w < 1 interpolates and w > 1 extrapolates (the paper recommends w in [1, 3]). The rule is affine,
so it holds alike for eps, x0, v and flow predictions (:func:`~diffalign.models.prediction.combine`).

With classifier-free guidance, CFG at the same scale is applied to each model first, then the two are
mixed: 4 network passes per sample and step, which :meth:`RLGDenoiser.evals_for` reports.

``tuned`` may be a separate denoiser, or the *same* diffusers network carrying a peft LoRA adapter
(``da.load_model(name, lora=DIR)`` passed as both ``base`` and ``tuned``): the base pass then runs with
the adapters switched off, so one copy of the weights serves both.
"""

from __future__ import annotations

import contextlib
import math
import numbers
from typing import Optional

import torch

from ..errors import DiffalignError
from .conditioning import Condition
from .denoiser import Denoiser
from .lora import adapters_disabled
from .prediction import Prediction, combine
from .wrappers import CFGDenoiser, DenoiserWrapper

# times at which two schedules must agree to count as the same
_SCHEDULE_PROBE = torch.linspace(0.0, 1.0, 101, dtype=torch.float64)


class RLGDenoiser(DenoiserWrapper):
    """``(1 - w) CFG_s(base) + w CFG_s(tuned)`` as one denoiser.

    Args:
        base: the reference model.
        tuned: the RL-tuned model (same schedule and sample shape), or ``base`` itself when its network
            carries a LoRA adapter that holds the tuning.
        weight: w >= 0; 0 is exactly ``base``, 1 exactly ``tuned``, above 1 extrapolates.
        guidance_scale: the CFG scale applied to each model (1: no CFG).
        null_cond: the null branch of that CFG (e.g. a negative prompt); None: the model's own.
    """

    def __init__(self, base: Denoiser, tuned: Denoiser, weight: float, guidance_scale: float = 1.0, null_cond=None):
        check_compatible(base, tuned)
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real) or not math.isfinite(weight) or weight < 0:
            raise DiffalignError(f"RLG weight must be a finite number >= 0 (0: base, 1: tuned, > 1: extrapolate), got {weight!r}")
        super().__init__(base)
        self.weight = float(weight)
        self.guidance_scale = float(guidance_scale)
        self.shared_network = _lora_network(base, tuned)
        self.base_cfg = CFGDenoiser(base, guidance_scale, null_cond=null_cond)
        self.tuned_cfg = self.base_cfg if base is tuned else CFGDenoiser(tuned, guidance_scale, null_cond=null_cond)

    def _uses_base(self) -> bool:
        return self.weight != 1.0

    def _uses_tuned(self) -> bool:
        return self.weight != 0.0

    def evals_for(self, cond: Condition, t: Optional[torch.Tensor] = None) -> int:
        base = self.base_cfg.evals_for(cond, t) if self._uses_base() else 0
        tuned = self.tuned_cfg.evals_for(cond, t) if self._uses_tuned() else 0
        return base + tuned

    def predict(self, x, t, cond: Condition = None) -> Prediction:
        # w = 0 and w = 1 skip the unused model: the identities then hold bit for bit, and cost less
        tuned = self.tuned_cfg.predict(x, t, cond) if self._uses_tuned() else None
        if not self._uses_base():
            return tuned
        with self._base_pass():
            base = self.base_cfg.predict(x, t, cond)
        if tuned is None:
            return base
        return combine([base, tuned], [1.0 - self.weight, self.weight])

    def _base_pass(self):
        if self.shared_network is None:
            return contextlib.nullcontext()
        return adapters_disabled(self.shared_network)

    def extra_repr(self) -> str:
        shared = ", base = tuned with LoRA off" if self.shared_network is not None else ""
        return f"weight={self.weight}, guidance_scale={self.guidance_scale}{shared}"


def network_of(model: Denoiser):
    """The diffusers network under any wrappers, or None (a FunctionDenoiser has none)."""
    while model is not None:
        network = getattr(model, "network", None)
        if network is not None:
            return network
        model = getattr(model, "inner", None)
    return None


def _lora_network(base: Denoiser, tuned: Denoiser):
    """The shared network whose adapters hold the tuning, or None for two separate models."""
    network = network_of(tuned)
    if base is not tuned and (network is None or network is not network_of(base)):
        return None
    if network is None or not getattr(network, "_hf_peft_config_loaded", False):
        raise DiffalignError(
            "RLG got the same model as base and tuned, but its network has no LoRA adapter; "
            "pass a separate tuned model, or one loaded with da.load_model(name, lora=DIR)"
        )
    return network


def check_compatible(base: Denoiser, tuned: Denoiser) -> None:
    """One clear error when the two models cannot be mixed: different schedules or sample shapes."""
    for name, model in (("base", base), ("tuned", tuned)):
        if not isinstance(model, Denoiser):
            raise DiffalignError(f"RLG {name} must be a diffalign Denoiser, got {type(model).__name__}")
    if tuple(base.shape) != tuple(tuned.shape):
        raise DiffalignError(f"RLG base and tuned models have different sample shapes: {base.shape} vs {tuned.shape}")
    if not schedules_match(base.schedule, tuned.schedule):
        raise DiffalignError(f"RLG base and tuned models have different schedules: {base.schedule!r} vs {tuned.schedule!r}")


def schedules_match(a, b) -> bool:
    """Same class and the same alpha(t), sigma(t) on a fine grid of times."""
    if type(a) is not type(b):
        return False
    return all(torch.allclose(torch.as_tensor(fa(_SCHEDULE_PROBE), dtype=torch.float64),
                              torch.as_tensor(fb(_SCHEDULE_PROBE), dtype=torch.float64), rtol=1e-6, atol=1e-9)
               for fa, fb in ((a.alpha, b.alpha), (a.sigma, b.sigma)))
