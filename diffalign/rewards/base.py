"""The reward interface: a scoring function from images (and their prompts) to one number per image.

A reward is called as ``reward(images, prompts=None, metadata=None)`` (design.md §3b). It takes float
``[0, 1]`` NCHW images (the "image space" of :mod:`diffalign.datasets`), optionally one prompt and one
metadata dict per image (metadata: the extra fields of a jsonl prompt file), and returns a ``(B,)``
float tensor, higher is better. ``needs_prompts`` says whether a reward reads the prompts (CLIPScore,
the shapes verifier, PickScore ...); one that does, called without them, raises one line naming it. ``differentiable`` says whether gradients of the score with
respect to the images are meaningful: gradient-based methods (reward backpropagation as in
DRaFT, Clark et al. 2023, arXiv:2309.17400, or AlignProp, Prabhudesai et al. 2023,
arXiv:2310.03739; and gradient guidance) need it, while policy-gradient methods such as DDPO
(Black et al. 2023, arXiv:2305.13301) and sampling-based methods only need the values.

:func:`as_reward` turns whatever a user passes (a :class:`Reward`, a plain function, or a
registered name) into a :class:`Reward`.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Optional, Sequence

import torch
from torch import nn

from ..errors import DiffalignError
from .registry import get, names

__all__ = ["Reward", "CallableReward", "as_reward", "check_prompts", "takes_prompts"]


class Reward(nn.Module):
    """Base class for rewards: ``reward(images, prompts=None, metadata=None) -> (B,)``, higher is better.

    Subclasses implement :meth:`forward`, either as ``forward(images)`` (a reward that ignores
    prompts) or as ``forward(images, prompts=None, metadata=None)``; the base class calls whichever
    it finds. Calling the reward checks the input is a batch of NCHW float images, that ``prompts``
    and ``metadata`` have one entry per image, and that the output has one score per image. Rewards
    are fixed scoring functions, so :meth:`train` keeps them in eval mode (dropout in, e.g., the
    aesthetic MLP never switches on) and model-backed rewards freeze their parameters.
    """

    #: Short name used in messages (the registry name for registered rewards).
    name: str = "reward"
    #: Whether gradients of the score with respect to the images are meaningful.
    differentiable: bool = False
    #: Whether inputs must be NCHW images (plain callables take any batch, e.g. 2-D toy points).
    expects_images: bool = True
    #: Whether the score reads each image's prompt (design.md §3b).
    needs_prompts: bool = False
    _forward_takes_prompts: bool = True

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # decided once per class, so a call never pays for signature inspection
        cls._forward_takes_prompts = takes_prompts(cls.forward)

    def forward(self, images: torch.Tensor, prompts=None, metadata=None) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError(f"{type(self).__name__} must implement forward(images, prompts=None, metadata=None)")

    def default_prompts(self, batch_size: int) -> Optional[list[str]]:
        """The prompts of a prompt-free call (e.g. the ``clip`` reward's ``prompt=`` option); None: none."""
        return None

    def __call__(self, images: torch.Tensor, prompts: Optional[Sequence[str]] = None,
                 metadata: Optional[Sequence[Any]] = None) -> torch.Tensor:
        if self.expects_images:
            check_images(images, self.name)
        elif not torch.is_tensor(images) or images.ndim < 1:
            raise DiffalignError(f"reward {self.name!r} expects a batched tensor; got {type(images).__name__}")
        batch = images.shape[0]
        prompts = check_prompts(prompts, batch, self.name)
        metadata = check_metadata(metadata, batch, self.name)
        if self.needs_prompts and prompts is None:
            prompts = self.default_prompts(batch)
            if prompts is None:
                raise DiffalignError(
                    f"reward {self.name!r} needs prompts: call it as reward(images, prompts=[one per image]), or "
                    "sample with prompts=[...] (da.sample, AlignedPipeline(prompt=...), diffalign sample --prompts FILE)"
                )
        if self._forward_takes_prompts:
            scores = super().__call__(images, prompts=prompts, metadata=metadata)
        else:
            scores = super().__call__(images)
        if not torch.is_tensor(scores) or tuple(scores.shape) != (batch,):
            shape = tuple(scores.shape) if torch.is_tensor(scores) else type(scores).__name__
            raise DiffalignError(
                f"reward {self.name!r} returned {shape} for {batch} images; "
                f"expected a tensor of shape ({batch},)"
            )
        return scores

    def train(self, mode: bool = True) -> "Reward":
        return super().train(False)


def takes_prompts(fn: Callable) -> bool:
    """Whether ``fn`` accepts a ``prompts`` keyword (named, or through ``**kwargs``)."""
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins and some C callables have no signature
        return False
    return any(p.name == "prompts" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def check_prompts(prompts: Any, batch_size: int, name: str) -> Optional[list[str]]:
    """``prompts`` as a list of ``batch_size`` strings (one string is repeated for every image), or None."""
    if prompts is None:
        return None
    if isinstance(prompts, str):
        return [prompts] * batch_size
    if not isinstance(prompts, (list, tuple)) or not all(isinstance(p, str) for p in prompts):
        raise DiffalignError(f"reward {name!r}: prompts must be a list of strings, one per image; got {prompts!r:.80}")
    if len(prompts) != batch_size:
        raise DiffalignError(f"reward {name!r} got {len(prompts)} prompts for {batch_size} images; give one per image")
    return list(prompts)


def check_metadata(metadata: Any, batch_size: int, name: str) -> Optional[list]:
    """``metadata`` as a list of ``batch_size`` entries (dicts, usually), or None."""
    if metadata is None:
        return None
    if isinstance(metadata, dict):
        return [metadata] * batch_size
    if not isinstance(metadata, (list, tuple)) or len(metadata) != batch_size:
        got = len(metadata) if isinstance(metadata, (list, tuple)) else type(metadata).__name__
        raise DiffalignError(f"reward {name!r}: metadata must be a list with one entry per image ({batch_size}); got {got}")
    return list(metadata)


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

    A one-argument callable never receives prompts. One with a ``prompts`` parameter (or ``**kwargs``)
    receives them, and ``metadata`` too when it names it; it *needs* them when ``prompts`` has no
    default. ``differentiable`` is taken from the callable's own ``differentiable`` attribute when it
    has one, else ``False`` (the safe assumption). Non-tensor results (lists, arrays) are converted
    to a float32 tensor on the images' device.
    """

    expects_images = False

    def __init__(self, fn: Callable[..., object]):
        super().__init__()
        self.fn = fn
        self.differentiable = bool(getattr(fn, "differentiable", False))
        self.name = getattr(fn, "__name__", None) or type(fn).__name__
        self._fn_takes_prompts = takes_prompts(fn)
        self._fn_takes_metadata = _takes_keyword(fn, "metadata")
        self.needs_prompts = bool(getattr(fn, "needs_prompts", _required_keyword(fn, "prompts")))

    def forward(self, images: torch.Tensor, prompts=None, metadata=None) -> torch.Tensor:
        if not self._fn_takes_prompts:
            scores = self.fn(images)
        elif self._fn_takes_metadata:
            scores = self.fn(images, prompts=prompts, metadata=metadata)
        else:
            scores = self.fn(images, prompts=prompts)
        if not torch.is_tensor(scores):
            scores = torch.as_tensor(scores, dtype=torch.float32, device=images.device)
        return scores


def _takes_keyword(fn: Callable, keyword: str) -> bool:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == keyword or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)


def _required_keyword(fn: Callable, keyword: str) -> bool:
    try:
        parameter = inspect.signature(fn).parameters.get(keyword)
    except (TypeError, ValueError):
        return False
    return parameter is not None and parameter.default is inspect.Parameter.empty


def as_reward(obj: object) -> Reward:
    """A :class:`Reward` from a reward, a callable ``images -> (B,)`` (or ``(images, prompts) -> (B,)``),
    or a registered name.

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
