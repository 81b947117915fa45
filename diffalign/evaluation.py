"""Quality measures for the embedded digits models: class accuracy and FID in classifier features.

FID uses torchmetrics' ``FrechetInceptionDistance`` with the embedded classifier's penultimate layer
as the feature extractor (``feature=module`` with ``num_features``), since Inception features are
meaningless on 8x8 digits and Inception weights are not available offline.
"""

from __future__ import annotations

import torch

from .rewards.digit import load_digit_classifier


@torch.no_grad()
def classify(images: torch.Tensor) -> torch.Tensor:
    """Predicted digit for float [0, 1] images (B, 1, 8, 8)."""
    classifier = load_digit_classifier()
    return classifier(images.float().cpu()).argmax(1)


def class_accuracy(images: torch.Tensor, labels) -> float:
    labels = torch.as_tensor(labels).expand(images.shape[0])
    return (classify(images) == labels.cpu()).float().mean().item()


@torch.no_grad()
def fid(generated: torch.Tensor, reference: torch.Tensor) -> float:
    """Frechet distance between classifier features of two image sets (float [0, 1], (B, 1, 8, 8))."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    from .models.classifier import ClassifierFeatures

    metric = FrechetInceptionDistance(feature=ClassifierFeatures(load_digit_classifier()), normalize=True)
    metric.update(reference.float().cpu(), real=True)
    metric.update(generated.float().cpu(), real=False)
    return float(metric.compute())
