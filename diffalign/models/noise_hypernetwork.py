"""`NoiseHypernetwork`: z -> z + f(z, c), the learned noise modulation of HyperNoise.

HyperNoise (Eyring et al. 2025, "Noise Hypernetworks: Amortizing Test-Time Compute in Diffusion
Models", arXiv:2508.09968) trains f so that g(z + f(z)) follows the reward-tilted
distribution of a frozen generator g; at inference one pass of f replaces ReNO's per-sample
optimisation. f is initialised to output exactly zero, so an untrained hypernetwork leaves every
sample unchanged, bit for bit.

Two forms, saved as a directory with ``hypernoise.json`` (the form and its options) and safetensors:

* :class:`~diffalign.models.lora_noise_hypernetwork.LoRANoiseHypernetwork` -- a peft LoRA on the
  generator's own diffusers network, evaluated at t = 1 (the paper's form);
* :class:`~diffalign.models.mlp_noise_hypernetwork.MLPNoiseHypernetwork` -- a small separate network,
  for any model.

The registry of forms, :func:`build_hypernetwork` and :func:`load_hypernetwork` live in
:mod:`~diffalign.models.hypernetwork_forms`, which imports the forms (this base imports neither).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .conditioning import Condition

CONFIG_NAME = "hypernoise.json"


class NoiseHypernetwork(nn.Module):
    """Base class: subclasses implement :meth:`offset` (f) and the persistence hooks."""

    form: str = ""

    def offset(self, z: torch.Tensor, cond: Condition = None) -> torch.Tensor:
        """f(z, c), the same shape as z (cond: the generator's *encoded* condition, or None)."""
        raise NotImplementedError

    def forward(self, z: torch.Tensor, cond: Condition = None) -> torch.Tensor:
        return z + self.offset(z, cond)

    def passes_per_sample(self, cond: Condition = None) -> int:
        """Generator-network passes one offset costs per sample (0 for a separate network)."""
        return 0

    def options(self) -> dict[str, Any]:
        raise NotImplementedError

    def save_weights(self, directory: Path) -> None:
        raise NotImplementedError

    def load_weights(self, directory: Path) -> None:
        raise NotImplementedError

    def save_pretrained(self, directory) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_NAME).write_text(json.dumps({"form": self.form, **self.options()}, indent=2))
        self.save_weights(directory)
        return directory
