"""`NoisyRewardNet`: a small reward model r_phi(x_t, t) on noisy model-space samples.

Flow-NRG (Liu et al. 2025, arXiv:2501.13918, Sec. 4.3) guides with a reward model trained on noisy
latents, because a clean reward evaluated at the denoiser's estimate x0_hat is a poor value estimate at
high noise. The network here is deliberately small: an MLP on the flattened sample and Fourier features
of t. It is trained by the ``noisy_reward`` trainer (:mod:`diffalign.trainers.noisy_reward`) and saved
as ``config.json`` + ``model.safetensors``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

from ..errors import DiffalignError
from ..noisy_reward_files import check_noisy_reward_files

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
# how reward-space images map back to model space (the inverse of the model's decode)
IMAGE_TO_MODEL = ("pixel", "identity")


class NoisyRewardNet(nn.Module):
    """``r_phi(x_t, t) -> (B,)`` for samples of shape ``shape`` at times t in [0, 1] (t = 1 is noise).

    Args:
        shape: one sample's shape in model space, e.g. (1, 8, 8).
        hidden: width of the two hidden layers.
        time_features: Fourier frequencies of t (sin and cos of pi k t, k = 1..time_features).
        image_to_model: "pixel" (model space = 2 image - 1, the embedded digits models) or "identity".
    """

    def __init__(self, shape, hidden: int = 256, time_features: int = 8, image_to_model: str = "pixel"):
        super().__init__()
        if image_to_model not in IMAGE_TO_MODEL:
            raise DiffalignError(f"unknown image_to_model {image_to_model!r}; valid choices: {', '.join(IMAGE_TO_MODEL)}")
        self.config = {"shape": [int(s) for s in shape], "hidden": int(hidden), "time_features": int(time_features),
                       "image_to_model": image_to_model}
        size = math.prod(self.config["shape"])
        self.register_buffer("frequencies", math.pi * torch.arange(1, time_features + 1, dtype=torch.float32), persistent=False)
        self.mlp = nn.Sequential(
            nn.Linear(size + 1 + 2 * time_features, hidden), nn.SiLU(),
            nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, 1),
        )

    def forward(self, x_t: torch.Tensor, t) -> torch.Tensor:
        weight = self.mlp[0].weight
        x = x_t.reshape(x_t.shape[0], -1).to(weight.dtype)
        t = torch.as_tensor(t, device=x.device).to(weight.dtype)
        t = t.expand(x.shape[0]) if t.ndim == 0 else t.reshape(-1)
        angles = t[:, None] * self.frequencies
        features = torch.cat([x, t[:, None], angles.sin(), angles.cos()], dim=1)
        return self.mlp(features).squeeze(-1)

    def images_to_model_space(self, images: torch.Tensor) -> torch.Tensor:
        return images * 2.0 - 1.0 if self.config["image_to_model"] == "pixel" else images

    # -- persistence ---------------------------------------------------------------------------------
    def save(self, directory) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / CONFIG_NAME).write_text(json.dumps({"_class_name": type(self).__name__, **self.config}, indent=2))
        save_file({k: v.detach().float().contiguous().cpu() for k, v in self.state_dict().items()}, str(directory / WEIGHTS_NAME))

    @classmethod
    def load(cls, path) -> "NoisyRewardNet":
        """From a directory holding config.json + model.safetensors, or a training run directory (its final/)."""
        from ..models.loading import load_safetensors, read_json

        directory = Path(path).expanduser()
        if not (directory / CONFIG_NAME).is_file() and (directory / "final" / CONFIG_NAME).is_file():
            directory = directory / "final"
        if not (directory / CONFIG_NAME).is_file():
            raise DiffalignError(f"no noisy reward model at {directory}: expected {CONFIG_NAME} and {WEIGHTS_NAME} "
                                 "(made by 'diffalign train configs/noisy_reward_digits.yaml --output-dir DIR')")
        config = read_json(directory / CONFIG_NAME)
        if config.pop("_class_name", None) != cls.__name__:
            raise DiffalignError(f"{directory / CONFIG_NAME} does not describe a {cls.__name__}")
        check_noisy_reward_files(config, directory / WEIGHTS_NAME)  # a huge `hidden` would allocate tens of GB
        model = cls(**config)
        try:
            model.load_state_dict(load_safetensors(directory / WEIGHTS_NAME))
        except RuntimeError as err:
            raise DiffalignError(f"weights in {directory / WEIGHTS_NAME} do not fit its config: {str(err).splitlines()[0]}") from None
        return model.eval().requires_grad_(False)
