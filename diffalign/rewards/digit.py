"""The ``digit`` reward: log-probability of a target class under the embedded digit classifier.

``r(x) = log p(y = target | x) = log_softmax(f(x))[target]`` for the small CNN ``f`` of
:mod:`diffalign.models.classifier`, trained on the ``train`` split of scikit-learn's 8x8 digits.
This is the classifier log-likelihood used as a reward / guidance signal in classifier guidance
(Dhariwal & Nichol, "Diffusion Models Beat GANs on Image Synthesis", NeurIPS 2021,
arXiv:2105.05233, Sec. 4), and a standard toy target for reward-alignment methods. It is
differentiable in the images; the classifier's own parameters are frozen.
"""

from __future__ import annotations

import functools
import numbers
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import DiffalignError
from ..models.classifier import DigitClassifier
from .base import Reward
from .registry import REWARDS

__all__ = ["DigitReward", "default_classifier_dir", "load_digit_classifier"]

IMAGE_SHAPE = (1, 8, 8)


def default_classifier_dir() -> Path:
    """The classifier shipped with the package: ``diffalign/data/digit-classifier``."""
    return Path(str(resources.files("diffalign").joinpath("data", "digit-classifier")))


@functools.lru_cache(maxsize=1)
def _load_default_classifier() -> DigitClassifier:
    return DigitClassifier.from_pretrained(default_classifier_dir())


def load_digit_classifier(classifier_dir: str | Path | None = None) -> DigitClassifier:
    """Load a frozen, eval-mode :class:`DigitClassifier` from ``classifier_dir``.

    ``None`` (or the packaged directory itself) gives the packaged classifier, loaded once and
    cached: the same module object is shared by every caller, so moving it to a device moves it
    for all of them.
    """
    default = default_classifier_dir()
    if classifier_dir is None or Path(classifier_dir).resolve() == default.resolve():
        return _load_default_classifier()
    directory = Path(classifier_dir)
    if not directory.is_dir():
        raise DiffalignError(f"digit classifier directory {directory} does not exist")
    return DigitClassifier.from_pretrained(directory)


@REWARDS.register("digit")
class DigitReward(Reward):
    """``log p(y = target | x)`` under the digit classifier, for float [0, 1] (B, 1, 8, 8) images.

    Options: ``target`` (an integer class 0..9; None: each image's prompt names its target, e.g.
    ``prompts=["3", "7"]`` on the class-conditional digits models -- the embedded world's prompt-aware
    reward) and ``classifier_dir`` (a directory with ``config.json`` + ``model.safetensors``;
    default: the packaged classifier).
    """

    name = "digit"
    differentiable = True

    def __init__(self, *, target: int | None = None, classifier_dir: str | Path | None = None):
        super().__init__()
        self.classifier = load_digit_classifier(classifier_dir)
        num_classes = self.classifier.config["num_classes"]
        self.num_classes = num_classes
        if target is not None and (isinstance(target, bool) or not isinstance(target, numbers.Integral)
                                   or not 0 <= target < num_classes):
            valid = ", ".join(str(k) for k in range(num_classes))
            raise DiffalignError(f"digit reward target must be one of {valid} (or None: the prompt names it); got {target!r}")
        self.target = None if target is None else int(target)
        self.needs_prompts = self.target is None

    def _targets(self, prompts: list[str], device) -> torch.Tensor:
        labels = []
        for prompt in prompts:
            text = prompt.strip()
            if not (text.isdigit() and int(text) < self.num_classes):
                raise DiffalignError(f"digit reward without a target reads each prompt as its digit 0..{self.num_classes - 1}; "
                                     f"got the prompt {prompt!r}")
            labels.append(int(text))
        return torch.tensor(labels, device=device)

    def forward(self, images: torch.Tensor, prompts=None, metadata=None) -> torch.Tensor:
        if tuple(images.shape[1:]) != IMAGE_SHAPE:
            raise DiffalignError(
                f"digit reward expects images of shape (B, 1, 8, 8); got {tuple(images.shape)}"
            )
        weight = self.classifier.head.weight
        logits = self.classifier(images.to(device=weight.device, dtype=weight.dtype))
        log_p = F.log_softmax(logits, dim=-1)
        if self.target is not None:
            return log_p[:, self.target].to(images.device)
        targets = self._targets(prompts, log_p.device)
        return log_p.gather(1, targets[:, None])[:, 0].to(images.device)

    def extra_repr(self) -> str:
        return f"target={self.target}"
