"""A per-prompt cache of text embeddings, shared by the prompt-aware hub rewards.

Training and search score many images per prompt (k samples per prompt, design.md §3b), so each
distinct prompt is encoded once; text embeddings carry no gradient (only pixels are optimised).
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["TextEmbeddingCache"]


class TextEmbeddingCache:
    """``cache(prompts, encode) -> (B, D)``: rows of ``encode(missing prompts)``, each prompt encoded once."""

    #: a prompt set larger than this is re-encoded as it cycles (bounded memory)
    MAX_PROMPTS = 4096

    def __init__(self):
        self._rows: dict[str, torch.Tensor] = {}

    def __call__(self, prompts: list[str], encode: Callable[[list[str]], torch.Tensor]) -> torch.Tensor:
        missing = list(dict.fromkeys(p for p in prompts if p not in self._rows))
        if missing:
            if len(self._rows) + len(missing) > self.MAX_PROMPTS:
                self._rows.clear()
            with torch.no_grad():
                encoded = encode(missing)
            self._rows.update(zip(missing, encoded))
        return torch.stack([self._rows[p] for p in prompts])

    def clear(self) -> None:
        self._rows.clear()
