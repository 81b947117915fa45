"""A frozen transformers ``CLIPModel`` with its tokenizer and torch preprocessing (pickscore, clipscore).

CLIP: Radford et al., "Learning Transferable Visual Models From Natural Language Supervision"
(ICML 2021, arXiv:2103.00020), through transformers' ``CLIPModel``. The image processor's
configuration (``preprocessor_config.json``: shortest edge, crop, resample, mean/std) is read
and applied by :class:`~.pixel_preprocess.PixelPreprocess` on tensors, so scores stay
differentiable in the pixels; the processor itself never runs.

Sources are a local directory (``path=``, a ``save_pretrained`` copy) or a hub id. A hub id is
read from the Hugging Face cache, or downloaded when online; offline with nothing cached it fails
with one line saying to download it first or pass ``path=``. ``hub_load`` does the same for any
``from_pretrained`` call, so every hub reward fails alike.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import DiffalignError
from .base import Reward
from .pixel_preprocess import PixelPreprocess, PreprocessConfig

__all__ = ["HFClip", "hub_load", "load_hf_clip", "resolve_source", "weights_dtype"]

T = TypeVar("T")


def resolve_source(reward: str, path: str | os.PathLike | None, hub_id: str) -> str:
    """The directory ``path`` when given (it must exist), else the hub id."""
    if path is None:
        if not isinstance(hub_id, str) or hub_id.count("/") != 1:
            raise DiffalignError(f"reward {reward!r}: hub id must look like 'owner/name'; got {hub_id!r}")
        return hub_id
    if not isinstance(path, (str, os.PathLike)):
        raise DiffalignError(f"reward {reward!r}: path must be a directory; got {path!r}")
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise DiffalignError(f"reward {reward!r}: path {str(directory)!r} is not a directory "
                             f"(expected a local copy of the model, e.g. from huggingface-cli download)")
    return str(directory)


def hub_load(reward: str, what: str, source: str, load: Callable[[str], T]) -> T:
    """``load(source)``, with any failure to find the files turned into one actionable line."""
    try:
        return load(source)
    except (OSError, ValueError, KeyError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        if Path(source).is_dir():
            raise DiffalignError(f"reward {reward!r}: cannot load the {what} from {source}: {first}") from None
        offline = " (offline: HF_HUB_OFFLINE is set)" if _hub_offline() else ""
        raise DiffalignError(
            f"reward {reward!r}: the {what} {source!r} is not on this machine{offline}: download it first "
            f"(huggingface-cli download {source} --local-dir DIR) or pass path=DIR"
        ) from None


def _hub_offline() -> bool:
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover - transformers depends on it
        return False
    return bool(constants.HF_HUB_OFFLINE)


class HFClip(nn.Module):
    """Frozen CLIP towers plus the tensor preprocessing of their image processor."""

    def __init__(self, model: nn.Module, tokenizer, preprocess: PreprocessConfig, name: str):
        super().__init__()
        self.model = model.eval().requires_grad_(False)
        self.tokenizer = tokenizer
        self.preprocess = PixelPreprocess(preprocess, name=name)
        self.max_length = int(model.config.text_config.max_position_embeddings)

    def train(self, mode: bool = True) -> "HFClip":
        return super().train(False)

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised (B, D) image embeddings of float [0, 1] images, differentiable."""
        weight = self.model.visual_projection.weight
        pixels = self.preprocess(images).to(device=weight.device, dtype=weight.dtype)
        # projection of the pooled [CLS] token: what CLIPModel.get_image_features computes (transformers 4 and 5)
        pooled = self.model.vision_model(pixel_values=pixels).pooler_output
        return F.normalize(self.model.visual_projection(pooled).float(), dim=-1)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        """L2-normalised (T, D) text embeddings; prompts longer than the context are truncated, as the papers do."""
        weight = self.model.text_projection.weight
        tokens = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length,
                                return_tensors="pt")
        pooled = self.model.text_model(input_ids=tokens["input_ids"].to(weight.device),
                                       attention_mask=tokens["attention_mask"].to(weight.device)).pooler_output
        return F.normalize(self.model.text_projection(pooled).float(), dim=-1)


def load_hf_clip(reward: str, model_source: str, processor_source: str, dtype: str = "float32") -> HFClip:
    """CLIPModel from ``model_source`` and tokenizer + image-processor config from ``processor_source``
    (each a directory or a hub id)."""
    try:
        from transformers import AutoTokenizer, CLIPImageProcessor, CLIPModel
    except ImportError as err:  # pragma: no cover - a core dependency
        raise DiffalignError(f"reward {reward!r} needs transformers (pip install transformers): {err}") from None
    torch_dtype = weights_dtype(reward, dtype)
    model = hub_load(reward, "model", model_source, lambda s: CLIPModel.from_pretrained(s))
    tokenizer = hub_load(reward, "tokenizer", processor_source, lambda s: AutoTokenizer.from_pretrained(s))
    processor = hub_load(reward, "image processor", processor_source, lambda s: CLIPImageProcessor.from_pretrained(s))
    return HFClip(model.to(torch_dtype), tokenizer, PreprocessConfig.from_image_processor(processor), name=reward)


def weights_dtype(reward: str, dtype: str) -> torch.dtype:
    """The torch dtype named by a reward's ``dtype`` option (float32, bfloat16, float16)."""
    choices = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in choices:
        raise DiffalignError(f"reward {reward!r}: unknown dtype {dtype!r}; valid choices: {', '.join(choices)}")
    return choices[dtype]


def processor_source(reward: str, path: str | None, processor: str) -> str:
    """Where the tokenizer and preprocessor config come from: ``path`` when it holds them, else ``processor``."""
    if path is not None and (Path(path).expanduser() / "preprocessor_config.json").is_file():
        return str(Path(path).expanduser())
    if Path(str(processor)).expanduser().is_dir():
        return str(Path(processor).expanduser())
    return resolve_source(reward, None, processor)


class HFClipReward(Reward):
    """Base of the rewards that score ``cos(E_img(image), E_txt(prompt))`` under a transformers CLIP
    (``clipscore``, ``pickscore``): loading, the per-prompt text cache and the cosine live here once;
    a subclass turns the cosine into its score in :meth:`forward`."""

    differentiable = True
    needs_prompts = True

    def __init__(self, *, path: str | os.PathLike | None, hub_id: str, processor: str | None, dtype: str):
        from .text_cache import TextEmbeddingCache

        super().__init__()
        source = resolve_source(self.name, path, hub_id)
        # processor None: the processor files ship next to the weights (the OpenAI repos)
        self.clip = load_hf_clip(self.name, source, processor_source(self.name, path, processor or source), dtype)
        self.source = source
        self._texts = TextEmbeddingCache()
        self.eval()  # a fixed scoring function: no dropout, whatever the caller's mode

    def cosines(self, images: torch.Tensor, prompts) -> torch.Tensor:
        """(B,) cosine of each image with its own prompt (unit-norm embeddings)."""
        image = self.clip.encode_image(images)
        text = self._texts(prompts, self.clip.encode_text).to(image.device)
        return (image * text).sum(dim=-1)

    def extra_repr(self) -> str:
        return f"source={self.source!r}"
