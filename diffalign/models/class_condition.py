"""Class labels as learned "prompt embeddings" -- how the embedded digits models are conditioned.

Each class c owns a learned token sequence (and, for SD3-style models, a pooled vector) that the
network receives exactly where a text encoder's output would go (``encoder_hidden_states`` /
``pooled_projections``). One extra row is the *null* embedding trained by label dropout, so the same
network is also unconditional and classifier-free guidance works as it does for text-to-image models.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..errors import DiffalignError

FILE_NAME = "class_embeddings.safetensors"


class ClassEmbeddingCondition(nn.Module):
    """Rows 0..C-1 embed the classes; row C is the null (unconditional) embedding."""

    def __init__(self, num_classes: int, tables: dict[str, tuple[int, ...]] | None = None, **tensors: torch.Tensor):
        super().__init__()
        self.num_classes = int(num_classes)
        self.tables = nn.ParameterDict()
        for key, shape in (tables or {}).items():
            self.tables[key] = nn.Parameter(torch.randn(self.num_classes + 1, *shape) * 0.02)
        for key, value in tensors.items():
            self.tables[key] = nn.Parameter(value.clone())

    @property
    def null_index(self) -> int:
        return self.num_classes

    def labels(self, cond, batch_size: int) -> torch.Tensor:
        """Validate user conditioning (int or LongTensor of labels) as a (batch_size,) LongTensor.

        A prompt that names a class ("3", or a list of such strings) is its label, so a class-label
        model runs through the prompt-set path (``prompts=["3", "7"]``) like a text-to-image model.
        """
        if isinstance(cond, str) or (isinstance(cond, (list, tuple)) and cond and all(isinstance(c, str) for c in cond)):
            cond = [self._label_of_prompt(c) for c in ([cond] if isinstance(cond, str) else cond)]
            cond = cond[0] if len(cond) == 1 else cond
        try:
            labels = torch.as_tensor(cond)
        except (TypeError, ValueError, RuntimeError):
            raise DiffalignError(f"class conditioning must be an int or a 1-D LongTensor of labels, got {cond!r}") from None
        if labels.is_floating_point() or labels.dtype == torch.bool or labels.ndim > 1:
            raise DiffalignError(f"class conditioning must be an int or a 1-D LongTensor of labels, got {cond!r}")
        if labels.ndim == 0:
            labels = labels.expand(batch_size)
        if labels.shape[0] != batch_size:
            raise DiffalignError(f"got {labels.shape[0]} labels for {batch_size} samples")
        if torch.any((labels < 0) | (labels >= self.num_classes)):
            raise DiffalignError(f"class labels must lie in 0..{self.num_classes - 1}, got {labels.unique().tolist()}")
        return labels.long()

    def _label_of_prompt(self, prompt: str) -> int:
        text = prompt.strip()
        if not (text.isdigit() and int(text) < self.num_classes):
            raise DiffalignError(
                f"this model is conditioned on class labels 0..{self.num_classes - 1}, not on text: give cond as an int, "
                f"or a prompt that is a label such as '3'; got {prompt!r}"
            )
        return int(text)

    def lookup(self, labels: torch.Tensor) -> dict[str, torch.Tensor]:
        labels = labels.to(next(iter(self.tables.values())).device)
        return {key: table[labels] for key, table in self.tables.items()}

    def encode(self, cond, batch_size: int) -> dict[str, torch.Tensor]:
        return self.lookup(self.labels(cond, batch_size))

    def null(self, batch_size: int) -> dict[str, torch.Tensor]:
        return self.lookup(torch.full((batch_size,), self.null_index, dtype=torch.long))

    def save_pretrained(self, directory) -> None:
        from safetensors.torch import save_file

        tensors = {key: value.detach().contiguous() for key, value in self.tables.items()}
        save_file(tensors, str(Path(directory) / FILE_NAME), metadata={"num_classes": str(self.num_classes)})

    @classmethod
    def from_pretrained(cls, directory) -> "ClassEmbeddingCondition":
        from safetensors import safe_open

        from .loading import load_safetensors

        path = Path(directory) / FILE_NAME
        tensors = load_safetensors(path)
        with safe_open(str(path), framework="pt") as f:
            num_classes = int((f.metadata() or {}).get("num_classes", next(iter(tensors.values())).shape[0] - 1))
        return cls(num_classes, **tensors).requires_grad_(False)
