"""Text prompts as a condition encoder, through the pipeline's own ``encode_prompt``.

:class:`PromptCondition` is what makes ``cond="a photo of a cat"`` work on a denoiser built from a
pipeline (``da.load_model(dir)`` with ``text_encoder*/`` and ``tokenizer*/``, or
``AlignedPipeline``): the family's prompt encoding, unchanged, and its empty-prompt null condition
(what the stock pipeline uses for CFG without a negative prompt; zeros for SDXL's
``force_zeros_for_empty_prompt``).
"""

from __future__ import annotations

import threading
from typing import Optional

import torch

from ..errors import DiffalignError
from ..models.conditioning import broadcast_condition
from .family import PipelineFamily


class PromptCondition:
    """Encodes a prompt (a string, or a list of one string per sample) into the adapter's keyword dict."""

    def __init__(self, pipe, family: PipelineFamily, shape: tuple[int, ...]):
        self.pipe = pipe
        self.family = family
        self.shape = tuple(shape)
        self._null: Optional[dict] = None
        # The trees of a forest (dts, dts-star) encode their prompts in threads of their own. A fast
        # (Rust) tokenizer keeps its padding setting on the shared backend, and diffusers' encode_prompt
        # tokenizes twice (padding="max_length", then "longest" for its truncation warning), so two
        # threads interleaving got unpadded conditions of different lengths. One encoding at a time.
        self._lock = threading.Lock()

    def encode(self, cond, batch_size: int) -> dict:
        prompts = [cond] if isinstance(cond, str) else cond
        if not (isinstance(prompts, (list, tuple)) and prompts and all(isinstance(p, str) for p in prompts)):
            raise DiffalignError(f"prompt conditioning must be a string or a list of strings, got {cond!r}")
        if len(prompts) not in (1, batch_size):
            raise DiffalignError(f"got {len(prompts)} prompts for {batch_size} samples (give 1 or {batch_size})")
        with self._lock, torch.no_grad():
            positive, _ = self.family.encode_prompt(self.pipe, list(prompts), None, 1, False, self._device(), self.shape)
        return broadcast_condition(positive, batch_size)

    def null(self, batch_size: int) -> dict:
        with self._lock:
            if self._null is None:
                with torch.no_grad():
                    _, self._null = self.family.encode_prompt(self.pipe, [""], None, 1, True, self._device(),
                                                              self.shape)
        return broadcast_condition(self._null, batch_size)

    def _device(self) -> torch.device:
        return self.pipe._execution_device
