"""The LoRA form of HyperNoise's f: a peft LoRA on the generator's own network, evaluated at t = 1.

The paper (Eyring et al. 2025, arXiv:2508.09968, Sec. 4) makes f a LoRA on the pretrained generator's
own network. This form is *not* the reference implementation's: here f is the change the LoRA makes to
that network's output at t = 1, computed in two passes,

    f(z, c) = net_LoRA(z, t=1, c) - net(z, t=1, c),

which is exactly zero at initialisation (peft's LoRA B matrices start at zero, so the adapted network
adds exact zeros to every adapted layer). The adapter lives on a *copy* of the network, so the
generator itself -- and any LoRA a user loaded into it -- is never touched; the price is one copy of
the network's weights. One offset costs two network passes (adapted and base), counted as NFE.

**Regulariser scale.** The trainer's loss is ``||f||^2 / 2 - reward_weight * r`` (a sum over the d
elements of z, the KL approximation of :mod:`diffalign.noise_space`); the reference weighs
``lambda * mean(f^2)`` against ``r``. Dividing ours by ``reward_weight`` gives
``d / (2 reward_weight) * mean(f^2) - r``, so the reference's lambda is ``d / (2 reward_weight)``:
``reward_weight = d / (2 lambda)`` (for the 1x8x8 digits latents, d = 64, lambda = 1 is
``reward_weight = 32``).

Saved in diffusers' LoRA format (``pytorch_lora_weights.safetensors``, see
:mod:`diffalign.models.lora`).
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch

from ..errors import DiffalignError
from .conditioning import Condition
from .lora import ADAPTER_NAME, WEIGHT_NAME, add_lora, lora_format, save_lora
from .noise_hypernetwork import NoiseHypernetwork

DEFAULT_TARGETS = ["to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2"]


class LoRANoiseHypernetwork(NoiseHypernetwork):
    """f = (LoRA-adapted network - network) at t = 1.

    Args:
        model: the generator, a diffalign denoiser around a diffusers network (``model.network``).
        rank, alpha, target_modules: the LoRA (alpha / rank scales the update).
        seed: seeds the LoRA's A matrices.
    """

    form = "lora"

    def __init__(self, model, rank: int = 8, alpha: float = 8.0, target_modules=None, seed: int = 0):
        super().__init__()
        if getattr(model, "network", None) is None:
            raise DiffalignError(f"the LoRA hypernetwork needs a diffusers-network model (from da.load_model), got {type(model).__name__}; use form 'mlp'")
        self.rank, self.alpha, self.seed = int(rank), float(alpha), int(seed)
        self.target_modules = list(target_modules or DEFAULT_TARGETS)
        self.adapted = copy.deepcopy(model).requires_grad_(False)
        add_lora(self.adapted.network, self.rank, self.alpha, self.target_modules, self.seed)
        self._base = [model]  # a list: the frozen generator is not a submodule (not saved, not trained)

    @property
    def base(self):
        return self._base[0]

    def offset(self, z, cond: Condition = None):
        t = torch.ones(z.shape[0], dtype=torch.float64, device=z.device)
        # the base pass stays in the graph: the exact log-det term needs df/dz through both passes
        return self.adapted(z, t, cond) - self.base(z, t, cond)

    def passes_per_sample(self, cond: Condition = None) -> int:
        return 2

    def options(self):
        return {"rank": self.rank, "alpha": self.alpha, "target_modules": self.target_modules, "seed": self.seed}

    def save_weights(self, directory: Path) -> None:
        save_lora(self.adapted.network, directory)

    def load_weights(self, directory: Path) -> None:
        from peft.utils import set_peft_model_state_dict
        from safetensors.torch import load_file

        file = Path(directory) / WEIGHT_NAME
        if not file.is_file():
            raise DiffalignError(f"missing hypernetwork LoRA weights {file}")
        prefix = lora_format(self.adapted.network).prefix + "."
        state = {k[len(prefix):]: v for k, v in load_file(str(file)).items() if k.startswith(prefix)}
        if not state:
            raise DiffalignError(f"LoRA file {file} has no '{prefix}' weights")
        result = set_peft_model_state_dict(self.adapted.network, state, adapter_name=ADAPTER_NAME)
        unexpected = getattr(result, "unexpected_keys", [])
        if unexpected:
            raise DiffalignError(f"LoRA file {file} does not fit this generator (unexpected keys such as {unexpected[0]!r})")
