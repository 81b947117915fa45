"""scikit-learn's bundled 8x8 digits (1,797 real images), split once with a fixed seed.

The embedded models train on the ``train`` split; every quality figure (classifier accuracy, class
accuracy of samples, FID) is measured on the held-out ``test`` split. Images come back as float
[0, 1] NCHW (reward space); :func:`to_model_space` maps them to the models' [-1, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

SPLIT_SEED = 0
TEST_FRACTION = 0.2


@dataclass(frozen=True)
class DigitsSplit:
    images: torch.Tensor  # (N, 1, 8, 8) float32 in [0, 1]
    labels: torch.Tensor  # (N,) int64


def load_digits_split(split: str) -> DigitsSplit:
    """The ``"train"`` (80%) or ``"test"`` (20%, stratified) part of sklearn's digits."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if split not in ("train", "test"):
        raise ValueError(f"unknown split {split!r}; valid choices: test, train")
    digits = load_digits()
    images = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(digits.target, dtype=torch.int64)
    train_idx, test_idx = train_test_split(
        torch.arange(len(labels)).numpy(), test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=labels.numpy()
    )
    idx = torch.as_tensor(train_idx if split == "train" else test_idx)
    return DigitsSplit(images[idx], labels[idx])


def to_model_space(images: torch.Tensor) -> torch.Tensor:
    return images * 2.0 - 1.0


def to_image_space(x: torch.Tensor) -> torch.Tensor:
    return ((x + 1.0) / 2.0).clamp(0.0, 1.0)
