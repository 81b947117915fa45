"""The embedded digit classifier: the `digit` reward and the feature extractor for FID.

A small CNN on float [0, 1] 1x8x8 images. :meth:`DigitClassifier.features` gives the penultimate
activations; :class:`ClassifierFeatures` wraps them in the form torchmetrics'
``FrechetInceptionDistance(feature=module)`` expects (a module with ``num_features``).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..errors import DiffalignError

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


class DigitClassifier(nn.Module):
    def __init__(self, width: int = 32, num_features: int = 64, num_classes: int = 10):
        super().__init__()
        self.config = {"width": width, "num_features": num_features, "num_classes": num_classes}
        self.num_features = num_features
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.SiLU(),
            nn.AvgPool2d(2),  # 4x4
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.SiLU(),
            nn.AvgPool2d(2),  # 2x2
            nn.Flatten(),
            nn.Linear(2 * width * 4, num_features), nn.SiLU(),
        )
        self.head = nn.Linear(num_features, num_classes)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate features of float [0, 1] images (B, 1, 8, 8)."""
        return self.body(images * 2.0 - 1.0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits."""
        return self.head(self.features(images))

    # -- persistence (safetensors + config.json) ---------------------------------------------
    def save_pretrained(self, directory) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.state_dict().items()}, str(directory / WEIGHTS_NAME))
        (directory / CONFIG_NAME).write_text(json.dumps(self.config, indent=2))

    @classmethod
    def from_pretrained(cls, directory) -> "DigitClassifier":
        from .loading import load_safetensors, read_json

        directory = Path(directory)
        model = cls(**read_json(directory / CONFIG_NAME))
        state = load_safetensors(directory / WEIGHTS_NAME)
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise DiffalignError(f"weights in {directory / WEIGHTS_NAME} do not fit the classifier: {str(err).splitlines()[0]}") from None
        return model.eval().requires_grad_(False)


class ClassifierFeatures(nn.Module):
    """Feature extractor for torchmetrics' FID: float [0, 1] images -> (B, num_features)."""

    def __init__(self, classifier: DigitClassifier):
        super().__init__()
        self.classifier = classifier
        self.num_features = classifier.num_features

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.classifier.features(images.float())
