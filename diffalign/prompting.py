"""The prompt a model call is made for, for the wrappers that read it (design.md §3b).

Samplers pass each image's prompt to the reward explicitly. A *denoiser wrapper* that scores its own
estimates (reward-gradient guidance) sits inside the model and sees only tensors, so the sampler
declares the prompt of the rows it is denoising with :func:`prompt_scope`, and the wrapper reads it
with :func:`current_prompt`. Samplers only ever denoise one prompt's rows at a time under such a
wrapper (:func:`reads_prompts`), so one prompt per scope is all it takes.
"""

from __future__ import annotations

import contextlib
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Iterator, Optional

__all__ = ["PromptScope", "current_prompt", "prompt_scope", "reads_prompts"]


@dataclass(frozen=True)
class PromptScope:
    prompt: str
    metadata: Any = None

    def prompts(self, batch_size: int) -> list[str]:
        return [self.prompt] * batch_size

    def metadata_rows(self, batch_size: int) -> Optional[list]:
        return None if self.metadata is None else [self.metadata] * batch_size


_CURRENT: ContextVar[Optional[PromptScope]] = ContextVar("diffalign_prompt", default=None)


@contextlib.contextmanager
def prompt_scope(prompt: Optional[str], metadata: Any = None) -> Iterator[None]:
    """Within the block, :func:`current_prompt` is ``prompt`` (None: no prompt)."""
    token = _CURRENT.set(None if prompt is None else PromptScope(prompt, metadata))
    try:
        yield
    finally:
        _CURRENT.reset(token)


def current_prompt() -> Optional[PromptScope]:
    return _CURRENT.get()


def reads_prompts(model: Any) -> bool:
    """Whether any part of ``model`` reads the current prompt (e.g. reward-gradient guidance), so that
    its rows must be denoised one prompt at a time."""
    modules = model.modules() if hasattr(model, "modules") else [model]
    return any(getattr(m, "reads_prompt_scope", False) for m in modules)
