"""The separate-network form of HyperNoise's f: a small MLP on (z, condition features), any model.

f(z, c) = W_out SiLU(... SiLU(W_in [z, phi(c)])), with W_out and its bias zero (so f = 0 at
initialisation, exactly). phi(c) concatenates the encoded condition's tensors, averaged over token
axes (for the digits models: the class "prompt" tokens and the pooled vector); an unconditional model
gets no condition features.
"""

from __future__ import annotations

from math import prod
from pathlib import Path

import torch
from torch import nn

from ..errors import DiffalignError
from .conditioning import Condition
from .noise_hypernetwork import NoiseHypernetwork

WEIGHTS_NAME = "model.safetensors"


def condition_features(cond: Condition, batch_size: int) -> torch.Tensor:
    """(B, k) features of an encoded condition: each tensor averaged over its token axes, concatenated."""
    if cond is None:
        return torch.zeros(batch_size, 0)
    if not isinstance(cond, dict):
        raise DiffalignError(f"the MLP hypernetwork reads encoded conditions (a dict of tensors), got {type(cond).__name__}")
    parts = [value.reshape(value.shape[0], -1, value.shape[-1]).mean(1) for _, value in sorted(cond.items()) if torch.is_tensor(value)]
    return torch.cat(parts, dim=1) if parts else torch.zeros(batch_size, 0)


class MLPNoiseHypernetwork(NoiseHypernetwork):
    """A small MLP f(z, c) with a zero output layer.

    Args:
        model: the generator (its sample shape and, through its null condition, the condition width);
            or None with ``shape`` (and ``cond_dim``) given, e.g. for a diffusers pipeline's latents.
        hidden: width of the hidden layers.
        layers: hidden layers.
        seed: seeds the initial weights.
    """

    form = "mlp"

    def __init__(self, model=None, hidden: int = 256, layers: int = 2, seed: int = 0, shape=None, cond_dim=None):
        super().__init__()
        self.hidden, self.layers, self.seed = int(hidden), int(layers), int(seed)
        if self.hidden < 1 or self.layers < 1:
            raise DiffalignError(f"hidden and layers must be >= 1, got hidden={hidden!r}, layers={layers!r}")
        if model is None and shape is None:
            raise DiffalignError("the MLP hypernetwork needs a model or a noise shape (e.g. a pipeline's unpacked latent shape)")
        # a diffusers pipeline has no diffalign model: give the (unpacked) latent shape instead
        self.shape = tuple(shape if shape is not None else model.shape)
        if cond_dim is None:
            cond_dim = 0 if model is None else condition_features(model.null_condition(1), 1).shape[1]
        self.cond_dim = int(cond_dim)
        dim = prod(self.shape)
        with torch.random.fork_rng(devices=[]):  # the initial weights depend on the seed alone
            torch.manual_seed(self.seed)
            blocks, width = [], dim + self.cond_dim
            for _ in range(self.layers):
                blocks += [nn.Linear(width, self.hidden), nn.SiLU()]
                width = self.hidden
            out = nn.Linear(width, dim)
        nn.init.zeros_(out.weight)
        nn.init.zeros_(out.bias)
        self.net = nn.Sequential(*blocks, out)

    def offset(self, z, cond=None):
        # unconditional: zero features (the MLP then learns one modulation for the whole distribution)
        features = torch.zeros(z.shape[0], self.cond_dim) if cond is None else condition_features(cond, z.shape[0])
        features = features.to(device=z.device, dtype=z.dtype)
        if features.shape[1] != self.cond_dim:
            raise DiffalignError(f"condition has {features.shape[1]} features, the hypernetwork was built for {self.cond_dim}")
        return self.net(torch.cat([z.flatten(1), features], dim=1)).reshape(z.shape)

    def options(self):
        return {"hidden": self.hidden, "layers": self.layers, "seed": self.seed, "shape": list(self.shape), "cond_dim": self.cond_dim}

    def save_weights(self, directory: Path) -> None:
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}, str(directory / WEIGHTS_NAME))

    def load_weights(self, directory: Path) -> None:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        file = Path(directory) / WEIGHTS_NAME
        if not file.is_file():
            raise DiffalignError(f"missing hypernetwork weights {file}")
        try:
            state = load_file(str(file))
            self.load_state_dict(state)
        except (SafetensorError, RuntimeError, OSError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise DiffalignError(f"hypernetwork weights {file} do not fit this model: {first}") from None
