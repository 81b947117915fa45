"""Asynchronous scoring: score batch k in the background while the caller produces batch k + 1.

Why: with a reward on a server (another GPU or machine, :mod:`.remote`) or any slow reward that
releases the GIL (I/O, a GPU kernel), an on-policy trainer otherwise idles while batch k is scored.
``AsyncScorer(reward).submit(images, prompts, metadata)`` returns a ``concurrent.futures.Future``
at once; ``future.result()`` gives the ``(B,)`` scores, or raises the reward's own error. The images
are cloned on submission (gradients detached), so the caller may overwrite its buffers meanwhile.
Futures complete in submission order (one worker by default), so results never interleave.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Optional, Sequence

import torch

__all__ = ["AsyncScorer"]


class AsyncScorer:
    """Runs ``reward(images, prompts, metadata)`` in ``max_workers`` background threads."""

    def __init__(self, reward, max_workers: int = 1):
        self.reward = reward
        self._pool = ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix=f"score-{reward.name}")

    def _score(self, images: torch.Tensor, prompts, metadata) -> torch.Tensor:
        with torch.no_grad():  # grad mode is per thread; scores for RL need no graph
            return self.reward(images, prompts=prompts, metadata=metadata)

    def submit(self, images: torch.Tensor, prompts: Optional[Sequence[str]] = None,
               metadata: Optional[Sequence[Any]] = None) -> Future:
        snapshot = images.detach().clone()
        copy = lambda values: list(values) if isinstance(values, (list, tuple)) else values  # noqa: E731
        return self._pool.submit(self._score, snapshot, copy(prompts), copy(metadata))

    def shutdown(self, wait: bool = True) -> None:
        self._pool.shutdown(wait=wait)
