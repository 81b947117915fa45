"""The `Denoiser`: the one model abstraction every sampler, guidance wrapper and trainer uses.

A denoiser knows its :class:`~diffalign.schedules.Schedule`, what its network predicts, the shape of one
sample, how to encode conditioning and how to decode model space into reward space. Calling
:meth:`Denoiser.predict` runs the network once on a batch and returns a :class:`Prediction` that offers
x0, eps, v and the flow velocity alike.

Cost accounting: :meth:`Denoiser.evals_for` is how many network passes one call spends per sample for
the given conditioning (1 for a plain model, 2 for classifier-free guidance with two passes). :class:`NFECounter` multiplies it by the
batch size, which is the NFE unit of the DTS paper and of design.md §3. A backward pass through the
network counts as one more pass (so x0-gradient reward guidance costs 2 per sample: forward + backward).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch
from torch import nn

from ..errors import DiffalignError
from ..schedules import Schedule
from .conditioning import Condition, broadcast_condition
from .prediction import Prediction, check_prediction_kind


class Denoiser(nn.Module):
    """Base class. Subclasses implement :meth:`forward` (raw network output for (x, t, cond))."""

    def __init__(self, schedule: Schedule, prediction: str, shape: tuple[int, ...]):
        super().__init__()
        self.schedule = schedule
        self.prediction = check_prediction_kind(prediction)
        self.shape = tuple(int(s) for s in shape)

    def __repr__(self) -> str:
        """One line (nn.Module's repr printed every layer of the network: 18 kB for digits-flow)."""
        network = getattr(self, "network", None)
        parts = [f"prediction={self.prediction!r}", f"shape={self.shape}", f"schedule={self.schedule!r}"]
        if isinstance(network, nn.Module):
            count = sum(p.numel() for p in network.parameters())
            parts.append(f"network={type(network).__name__} ({count:,} parameters)")
        return f"{type(self).__name__}({', '.join(parts)})"

    # -- to implement ------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Condition = None) -> torch.Tensor:
        """Raw network output for a batch x (B, *shape) at times t (B,) with encoded conditioning."""
        raise NotImplementedError

    # -- conditioning ------------------------------------------------------------------------
    def encode_condition(self, cond: Any, batch_size: int) -> Condition:
        """User conditioning -> a dict of batch-first tensors (``None``: unconditional)."""
        if cond is None:
            return None
        if isinstance(cond, dict):
            return broadcast_condition(cond, batch_size)
        raise DiffalignError(f"{type(self).__name__} takes no conditioning; got {cond!r}")

    def null_condition(self, batch_size: int) -> Condition:
        """The conditioning of the unconditional branch of classifier-free guidance."""
        return None

    def evals_for(self, cond: Condition, t: Optional[torch.Tensor] = None) -> int:
        """Network passes per sample that one :meth:`predict` call spends with this conditioning.

        ``t`` is the call's time(s) when known; a wrapper whose cost depends on time (reward guidance
        between its start and stop times) answers exactly then, and with its largest cost when
        ``t`` is None (what samplers use to plan a budget).
        """
        return 1

    # -- use -----------------------------------------------------------------------------------
    def predict(self, x: torch.Tensor, t, cond: Condition = None) -> Prediction:
        t = _time_batch(t, x)
        return Prediction.from_output(self.prediction, self(x, t, cond), x, t, self.schedule)

    def denoise_step(self, x: torch.Tensor, t, cond: Condition, kernel, t_next, noise: Optional[torch.Tensor]) -> torch.Tensor:
        """One model call and one ``kernel`` step: x at ``t_next`` (``kernel.step(self.predict(x, t, cond),
        t_next, noise)``). A forest's shared model (``samplers/forest.py``) overrides it to step all its
        trees' rows at once; a wrapper that changes :meth:`predict` (guidance) inherits this definition,
        so the step always sees the wrapped prediction."""
        return kernel.step(self.predict(x, t, cond), t_next, noise)

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        """Model space -> reward space (identity by default)."""
        return x0

    @property
    def data_range(self) -> Optional[tuple[float, float]]:
        """The interval the data occupies in model space ([-1, 1] for pixel models), or None where it has
        none (latents, oracles). Samples far outside it are not data: the decoder saturates them."""
        return None

    def sample_warnings(self, samples: torch.Tensor) -> list[str]:
        """One-line warnings about finished samples that this denoiser (or a wrapper) can tell are
        broken; the samplers emit them as :class:`~diffalign.errors.SamplingWarning`. None here."""
        return []

    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        return torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        for p in self.parameters():
            return p.dtype
        return torch.float32


def _time_batch(t, x: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t, device=x.device)
    if not t.is_floating_point():
        t = t.to(torch.float64)
    if t.ndim == 0:
        t = t.expand(x.shape[0])
    return t


class FunctionDenoiser(Denoiser):
    """Wrap any callable ``fn(x, t) -> tensor`` (or ``fn(x, t, cond)``) as a denoiser.

    This is how analytic oracles (an exact Gaussian / GMM posterior mean) and user models outside
    diffusers plug into every sampler. ``t`` reaches ``fn`` as a (B,) tensor of continuous times.

    Args:
        fn: the network; gets (x, t) when called unconditionally, (x, t, cond) otherwise.
        schedule: a :class:`VPSchedule` or :class:`FlowSchedule`.
        prediction: one of "x0", "eps", "v", "flow".
        shape: the shape of one sample, e.g. ``(2,)``.
        decode: optional model-space -> reward-space map.
        condition_encoder: optional map from user conditioning (e.g. a prompt string) to the tensor
            ``fn`` receives as ``cond`` (one row, or one row per sample); this is what lets a
            function model take ``prompts=[...]``.
    """

    def __init__(
        self,
        fn: Callable[..., torch.Tensor],
        schedule: Schedule,
        prediction: str = "eps",
        shape: tuple[int, ...] = (2,),
        decode: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
        condition_encoder: Optional[Callable[[Any], torch.Tensor]] = None,
    ):
        super().__init__(schedule, prediction, shape)
        self.fn = fn
        self._decode = decode
        self._condition_encoder = condition_encoder

    def forward(self, x, t, cond=None):
        output = self.fn(x, t) if cond is None else self.fn(x, t, cond)
        # a fn that multiplies by schedule.alpha(t) (float64) would silently promote float32 samples to float64
        return output.to(dtype=x.dtype)

    def encode_condition(self, cond, batch_size):
        if cond is None or isinstance(cond, dict):
            return broadcast_condition(cond, batch_size)
        if self._condition_encoder is not None:
            cond = self._condition_encoder(cond)
        elif isinstance(cond, str) or (isinstance(cond, (list, tuple)) and any(isinstance(c, str) for c in cond)):
            raise DiffalignError(
                f"FunctionDenoiser got the text condition {cond!r:.60}; pass condition_encoder= to map prompts to tensors"
            )
        cond = torch.as_tensor(cond)
        if cond.ndim == 0:
            cond = cond.expand(batch_size)
        return broadcast_condition({"cond": cond}, batch_size)

    def decode(self, x0):
        return x0 if self._decode is None else self._decode(x0)
