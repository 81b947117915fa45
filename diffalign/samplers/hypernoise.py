"""The ``hypernoise`` sampler: one noise-hypernetwork pass, then the few-step generator.

HyperNoise (Eyring et al. 2025, arXiv:2508.09968): x0 = g(z + f(z, c)), z ~ N(0, I), with f
trained by the ``hypernoise`` trainer (``diffalign train configs/hypernoise_digits.yaml``). g is the
deterministic generator of :mod:`.noise_generator` (``steps`` Euler steps).

NFE: the generator's ``steps x passes`` per sample plus the hypernetwork's own passes -- two network
passes for the LoRA form (adapted and base, see
:mod:`~diffalign.models.lora_noise_hypernetwork`), none for the separate MLP form (a network far
smaller than the generator; its time is in ``out.info["seconds"]``). No backward pass at inference.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..errors import DiffalignError
from ..kernels import Kernel
from ..models.conditioning import index_condition
from ..models.hypernetwork_forms import load_hypernetwork
from ..models.noise_hypernetwork import NoiseHypernetwork
from .base import SampleOutput, Sampler, too_small_budget
from .noise_generator import deterministic_kernel, generate, generator_passes
from .progress import progress_bar
from .registry import SAMPLERS
from .rollout import evaluate_reward, initial_noise


@SAMPLERS.register("hypernoise")
class HyperNoiseSampler(Sampler):
    """Samples of a few-step generator from hypernetwork-modulated noise.

    Args:
        path: a trained hypernetwork directory (``DIR/final`` of a ``hypernoise`` training run);
            ``--option path=DIR`` on the CLI.
        hypernetwork: or a :class:`~diffalign.models.noise_hypernetwork.NoiseHypernetwork` object.
        kernel: the deterministic kernel of the generator (default "euler").
        progress, batch_size: as for every sampler.

    ``out.info`` holds ``offset_norms`` (||f(z)|| per sample) and ``hypernetwork_nfe``.
    """

    name = "hypernoise"

    def __init__(
        self,
        path: Optional[str] = None,
        hypernetwork: Optional[NoiseHypernetwork] = None,
        kernel: Optional[str | Kernel] = "euler",
        progress: Optional[bool] = None,
        batch_size: int = 512,
    ):
        super().__init__(progress=progress, batch_size=batch_size)
        if (path is None) == (hypernetwork is None):
            raise DiffalignError(
                "hypernoise needs exactly one of path=DIR (a trained hypernetwork: 'diffalign train "
                "configs/hypernoise_digits.yaml --output-dir DIR' writes DIR/final) or hypernetwork=..."
            )
        if hypernetwork is not None and not isinstance(hypernetwork, NoiseHypernetwork):
            raise DiffalignError(f"hypernetwork must be a NoiseHypernetwork, got {type(hypernetwork).__name__}")
        self.path, self.hypernetwork, self.kernel = path, hypernetwork, kernel
        self._loaded: dict[int, NoiseHypernetwork] = {}

    def hypernetwork_for(self, model) -> NoiseHypernetwork:
        """The given hypernetwork, or the one at ``path`` built for ``model`` (loaded once per model)."""
        if self.hypernetwork is not None:
            return self.hypernetwork
        if id(model) not in self._loaded:
            self._loaded[id(model)] = load_hypernetwork(self.path, model).to(device=model.device, dtype=model.dtype)
        return self._loaded[id(model)]

    def _sample(self, model, reward, num_samples, nfe, steps, generator, cond):
        kernel = deterministic_kernel(model, self.kernel, self.name)
        hypernetwork = self.hypernetwork_for(model.inner)  # model is the NFE counter around the user's model
        encoded = model.encode_condition(cond, num_samples)
        hyper_passes = hypernetwork.passes_per_sample(encoded)
        needed = num_samples * (generator_passes(model, encoded, steps) + hyper_passes)
        if nfe is not None and needed > nfe:
            raise too_small_budget(self.name, nfe, needed, f"{num_samples} samples x ({steps} steps + the hypernetwork's {hyper_passes} passes)")
        samples, offsets = [], []
        single = num_samples <= self.batch_size
        for start in progress_bar(range(0, num_samples, self.batch_size), progress=False if single else self.progress, desc="hypernoise"):
            stop = min(num_samples, start + self.batch_size)
            chunk_cond = index_condition(encoded, slice(start, stop))
            z = initial_noise(model, stop - start, generator)
            offset = hypernetwork.offset(z, chunk_cond)
            model.count += (stop - start) * hyper_passes
            samples.append(generate(model, z + offset, chunk_cond, steps, kernel))
            offsets.append(offset.flatten(1).norm(dim=1))
        x0 = torch.cat(samples)
        rewards = None if reward is None else evaluate_reward(reward, model, x0, self.batch_size)
        info = {"offset_norms": torch.cat(offsets), "hypernetwork_nfe": num_samples * hyper_passes}
        return SampleOutput(x0, rewards, nfe=0, info=info)
