"""The reward interface: a scoring function from images to one number per image, higher is better.

A reward takes float ``[0, 1]`` NCHW images (the "image space" of :mod:`diffalign.datasets`) and
returns a ``(B,)`` float tensor. ``differentiable`` says whether gradients of the score with
respect to the images are meaningful: gradient-based methods (reward backpropagation as in
DRaFT, Clark et al. 2023, arXiv:2309.17400, or AlignProp, Prabhudesai et al. 2023,
arXiv:2310.03739; and gradient guidance) need it, while policy-gradient methods such as DDPO
(Black et al. 2023, arXiv:2305.13301) and sampling-based methods only need the values.

:func:`as_reward` turns whatever a user passes (a :class:`Reward`, a plain function, or a
registered name) into a :class:`Reward`.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from ..errors import DiffalignError
from .registry import get, names

__all__ = ["Reward", "CallableReward", "as_reward"]


class Reward(nn.Module):
    """Base class for rewards: ``reward(images) -> (B,)`` scores, higher is better.

    Subclasses implement :meth:`forward`; calling the reward checks the input is a batch of
    NCHW float images and that the output has one score per image. Rewards are fixed scoring
    functions, so :meth:`train` keeps them in eval mode (dropout in, e.g., the aesthetic MLP
    never switches on) and model-backed rewards freeze their parameters.
    """

    #: Short name used in messages (the registry name for registered rewards).
    name: str = "reward"
    #: Whether gradients of the score with respect to the images are meaningful.
    differentiable: bool = False
    #: Whether inputs must be NCHW images (plain callables take any batch, e.g. 2-D toy points).
    expects_images: bool = True

    def forward(self, images: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} must implement forward(images)")

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.expects_images:
            check_images(images, self.name)
        elif not torch.is_tensor(images) or images.ndim < 1:
            raise DiffalignError(f"reward {self.name!r} expects a batched tensor; got {type(images).__name__}")
        scores = super().__call__(images)
        if not torch.is_tensor(scores) or tuple(scores.shape) != (images.shape[0],):
            shape = tuple(scores.shape) if torch.is_tensor(scores) else type(scores).__name__
            raise DiffalignError(
                f"reward {self.name!r} returned {shape} for {images.shape[0]} images; "
                f"expected a tensor of shape ({images.shape[0]},)"
            )
        return scores

    def train(self, mode: bool = True) -> "Reward":
        return super().train(False)


def check_images(images: object, name: str) -> None:
    """Raise a :class:`DiffalignError` unless ``images`` is a float NCHW tensor."""
    if not torch.is_tensor(images):
        raise DiffalignError(f"reward {name!r} expects a float NCHW image tensor; got {type(images).__name__}")
    if images.ndim != 4 or not images.is_floating_point():
        raise DiffalignError(
            f"reward {name!r} expects float images of shape (B, C, H, W) in [0, 1]; "
            f"got {images.dtype} tensor of shape {tuple(images.shape)}"
        )


class CallableReward(Reward):
    """Wraps a plain callable ``x0 -> (B,)`` as a :class:`Reward` (any batched input, not only images).

    ``differentiable`` is taken from the callable's own ``differentiable`` attribute when it has
    one, else ``False`` (the safe assumption). Non-tensor results (lists, arrays) are converted
    to a float32 tensor on the images' device.
    """

    expects_images = False

    def __init__(self, fn: Callable[[torch.Tensor], object]):
        super().__init__()
        self.fn = fn
        self.differentiable = bool(getattr(fn, "differentiable", False))
        self.name = getattr(fn, "__name__", None) or type(fn).__name__

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        scores = self.fn(images)
        if not torch.is_tensor(scores):
            scores = torch.as_tensor(scores, dtype=torch.float32, device=images.device)
        return scores


def as_reward(obj: object) -> Reward:
    """A :class:`Reward` from a reward, a callable ``images -> (B,)``, or a registered name.

    Names are built with no options (``get(name)``); for a reward that needs options, build it
    with :func:`diffalign.rewards.get` and pass the result.
    """
    if isinstance(obj, Reward):
        return obj
    if isinstance(obj, str):
        return get(obj)
    if callable(obj) and not isinstance(obj, type):
        return CallableReward(obj)
    raise DiffalignError(
        f"cannot use {obj!r} as a reward: expected a Reward instance, a callable images -> (B,) scores, "
        f"or a reward name ({', '.join(names())})"
    )
