"""Inference-time alignment on the `shapes` world at an equal NFE budget per prompt.

One entry point, :func:`run_method`, used by ``benchmarks/shapes_inference.py`` and ``diffalign demo``,
so both run every method the same way. All methods sample the ``shapes`` model under classifier-free
guidance (CFG ``CFG_SCALE``, two passes per step) and spend at most ``nfe`` model evaluations per prompt
(the samplers' own count; a backward pass through the denoiser counts as one more pass, as
:class:`~diffalign.RewardGuidance` and ReNO report it; reward evaluations are never NFE):

* ``base``: ancestral sampling, one sample, ``STEPS`` steps (``2 x STEPS`` NFE, below the budget);
* ``best-of-n``: ``nfe / (2 STEPS)`` ancestral candidates, the best under the search reward;
* ``smc``: SMC (Wu et al. 2023, TDS without the twist gradient; the ``diff`` potential) at inverse
  temperature ``SMC_LAMBDA`` over the search reward, resampling every ``SMC_RESAMPLE_EVERY`` steps;
* ``dts-star``: DTS* (Jain et al. 2025, arXiv:2506.20701), a tree search for the reward's maximiser, at
  its defaults;
* ``reward-guidance``: :class:`~diffalign.RewardGuidance` with the differentiable ``shapes-clip``
  CLIPScore, one sample; the budget buys more steps (``nfe / 4``: forward + backward around CFG);
* ``reno``: ReNO (Eyring et al. 2024, arXiv:2406.04312), noise optimisation of a ``RENO_STEPS``-step
  deterministic (Euler/DDIM) generator against ``shapes-clip``; the budget sets its iterations.

The search methods use the GenEval-style verifier with ``partial=True`` (the fraction of the
caption's clauses that hold): denser than the strict 1/0, so a search can tell a near miss from a
blank. Gradient methods cannot use the verifier (it is not differentiable) and optimise shapes-clip.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Optional, Sequence

import torch

from ..errors import DiffalignError

CFG_SCALE = 3.0
STEPS = 20
SMC_LAMBDA = 10.0  # the verifier lies in [0, 1]: lambda = 1 would tilt by at most e, barely at all
SMC_RESAMPLE_EVERY = 5
RENO_STEPS = 4
# Picked by benchmarks/shapes_inference.py's sweep on 12 *train* prompts with shapes-clip stage 4
# (results/shapes_inference-reward-guidance-reno-nfe160.md): 0.03, 0.1 and 0.1 / 0.3 clipped at 1 tied at 11/12
# strict, 0.01 10/12; the tie goes to the gentlest. (With stage 3, blind to position, 0.01 had won.)
GUIDANCE_SCALE = 0.03
GUIDANCE_CLIP: Optional[float] = None

SEARCH_REWARD = "shapes-verifier (partial=True)"
GRADIENT_REWARD = "shapes-clip CLIPScore"
METHODS = ("base", "best-of-n", "smc", "dts-star", "reward-guidance", "reno")
OPTIMISES = {"base": "none", "best-of-n": SEARCH_REWARD, "smc": SEARCH_REWARD, "dts-star": SEARCH_REWARD,
             "reward-guidance": GRADIENT_REWARD, "reno": GRADIENT_REWARD}


@dataclass
class MethodRun:
    """One method's images (float [0, 1], one per prompt), its sampler output and wall time."""

    method: str
    images: torch.Tensor
    nfe_per_prompt: float
    seconds: float
    settings: str


def run_method(method: str, model, prompts: Sequence[str], nfe: int, seed: int = 0, metadata: Optional[list] = None,
               guidance_scale: float = GUIDANCE_SCALE, guidance_clip: Optional[float] = GUIDANCE_CLIP,
               progress: bool = False) -> MethodRun:
    """Run ``method`` (one of :data:`METHODS`) on ``prompts`` with at most ``nfe`` NFE per prompt."""
    from ..api import sample
    from ..guidance import RewardGuidance
    from ..models.wrappers import CFGDenoiser
    from ..rewards import get as get_reward

    if method not in METHODS:
        raise DiffalignError(f"unknown shapes inference method {method!r}; valid choices: {', '.join(METHODS)}")
    prompts = list(prompts)
    cfg = CFGDenoiser(model, CFG_SCALE)
    passes = cfg.evals_for(model.encode_condition(prompts[0], 1))  # model passes per sample per step (2 under CFG)
    common = dict(prompts=prompts, metadata=metadata, seed=seed, progress=progress)
    start = time.perf_counter()
    if method == "base":
        out = sample(cfg, None, sampler="ancestral", steps=STEPS, **common)
        settings = f"ancestral, {STEPS} steps"
    elif method in ("best-of-n", "smc", "dts-star"):
        verifier = get_reward("shapes-verifier", partial=True)
        options = dict(lam=SMC_LAMBDA, resample_every=SMC_RESAMPLE_EVERY) if method == "smc" else {}
        out = sample(cfg, verifier, sampler=method, nfe=nfe, steps=STEPS, **options, **common)
        settings = {"best-of-n": f"n = {out.info.get('n')}, {STEPS} steps",
                    "smc": f"{out.info.get('particles')} particles, lambda {SMC_LAMBDA:g}, resample every "
                           f"{SMC_RESAMPLE_EVERY} steps, {STEPS} steps",
                    "dts-star": f"defaults, {STEPS} steps"}[method]
    elif method == "reward-guidance":
        clip = get_reward("clip", model="shapes-clip")
        guided = RewardGuidance(cfg, clip, scale=guidance_scale, max_grad_norm=guidance_clip)
        steps = nfe // (2 * passes)  # forward + backward at every step
        out = sample(guided, None, sampler="ancestral", steps=steps, **common)
        settings = f"scale {guidance_scale:g}, clip {guidance_clip}, {steps} steps"
    else:  # reno
        from ..samplers.reno import reno_cost

        clip = get_reward("clip", model="shapes-clip")
        per_iterate = RENO_STEPS * passes
        # the most iterations the budget buys; below one iterate the sampler refuses the budget itself
        iterations = max((i for i in range(1, nfe + 1) if reno_cost(i, per_iterate) <= nfe), default=1)
        out = sample(cfg, clip, sampler="reno", nfe=nfe, steps=RENO_STEPS, iterations=iterations, **common)
        settings = f"{RENO_STEPS} Euler steps, {iterations} iterations (ReNO's other defaults)"
    with torch.no_grad():
        images = model.decode(out.samples).clamp(0, 1).float().cpu()
    seconds = time.perf_counter() - start
    return MethodRun(method, images, out.nfe / len(prompts), seconds, settings)
