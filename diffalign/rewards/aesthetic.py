"""The ``aesthetic`` reward: the LAION aesthetic predictor on CLIP ViT-L/14 image embeddings.

Schuhmann et al., LAION "improved aesthetic predictor"
(https://github.com/christophschuhmann/improved-aesthetic-predictor): a small MLP regressing
AVA-style 1..10 aesthetic ratings from the L2-normalised OpenAI CLIP ViT-L/14 image embedding,
trained on SAC + LAION-Logos + AVA (``sac+logos+ava1-l14-linearMSE.pth``). It is the aesthetic
reward of DDPO (Black et al. 2023, arXiv:2305.13301), DRaFT (Clark et al. 2023,
arXiv:2309.17400) and AlignProp (Prabhudesai et al. 2023, arXiv:2310.03739).

:class:`AestheticMLP` has LAION's module layout (an ``nn.Sequential`` named ``layers``, no
non-linearities), so the released state dict loads as is. The score is differentiable in the
images through the in-torch CLIP preprocessing of :mod:`.clip_backbone`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ..errors import DiffalignError
from ..models.loading import load_safetensors
from .base import Reward
from .clip_backbone import DEFAULT_MODEL, DEFAULT_PRETRAINED, load_clip_backbone
from .registry import REWARDS

__all__ = ["AestheticMLP", "AestheticScore", "load_aesthetic_mlp", "MLP_REPO", "MLP_FILENAME"]

MLP_REPO = "camenduru/improved-aesthetic-predictor"
MLP_FILENAME = "sac+logos+ava1-l14-linearMSE.pth"


class AestheticMLP(nn.Module):
    """LAION's aesthetic head: embed_dim -> 1024 -> 128 -> 64 -> 16 -> 1 (state-dict compatible)."""

    def __init__(self, embed_dim: int = 768):
        super().__init__()
        self.embed_dim = embed_dim
        self.layers = nn.Sequential(
            nn.Linear(embed_dim, 1024),
            nn.Dropout(0.2),
            nn.Linear(1024, 128),
            nn.Dropout(0.2),
            nn.Linear(128, 64),
            nn.Dropout(0.1),
            nn.Linear(64, 16),
            nn.Linear(16, 1),
        )

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.layers(embeddings)


def _fetch_default_weights() -> Path:
    """The released LAION weights from the Hugging Face hub (or its local cache)."""
    where = f"https://huggingface.co/{MLP_REPO}/resolve/main/{MLP_FILENAME}"
    try:
        from huggingface_hub import constants, hf_hub_download
    except ImportError:
        raise DiffalignError(
            f"aesthetic reward: huggingface_hub is not installed; download {MLP_FILENAME} from {where} "
            f"and pass mlp_weights=/path/to/{MLP_FILENAME}"
        ) from None
    try:
        return Path(hf_hub_download(MLP_REPO, MLP_FILENAME))
    except Exception as err:  # offline mode, no network, not cached: all mean "get the file yourself"
        offline = " (offline mode: HF_HUB_OFFLINE is set)" if constants.HF_HUB_OFFLINE else ""
        reason = str(err).strip().splitlines()[0].rstrip(".") if str(err).strip() else type(err).__name__
        raise DiffalignError(
            f"aesthetic reward: cannot get the LAION aesthetic predictor weights{offline}: {reason}. "
            f"Download {MLP_FILENAME} from {where} (also in github.com/christophschuhmann/improved-aesthetic-predictor), "
            f"save it anywhere and pass mlp_weights=/path/to/{MLP_FILENAME}; or run once with network access "
            f"so it lands in the Hugging Face cache"
        ) from None


def load_aesthetic_mlp(mlp_weights: str | os.PathLike | None = None, embed_dim: int = 768) -> AestheticMLP:
    """A frozen, eval-mode :class:`AestheticMLP` with weights from a .pth/.safetensors state dict.

    ``None`` fetches LAION's released weights (needs the network or a warm Hugging Face cache).
    """
    if isinstance(embed_dim, bool) or not isinstance(embed_dim, int) or embed_dim <= 0:
        raise DiffalignError(f"aesthetic reward: embed_dim must be a positive integer; got {embed_dim!r}")
    if mlp_weights is None:
        path = _fetch_default_weights()
    else:
        path = Path(mlp_weights).expanduser()
        if not path.is_file():
            raise DiffalignError(
                f"aesthetic reward: weights file {path} does not exist (LAION's are {MLP_FILENAME} from "
                f"https://huggingface.co/{MLP_REPO})"
            )
    if path.suffix == ".safetensors":
        state = load_safetensors(path)
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # pickle errors, zip errors, unsupported objects
            raise DiffalignError(f"aesthetic reward: cannot read weights file {path}: {err}") from None
        if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
            state = state["state_dict"]
    if not isinstance(state, dict):
        raise DiffalignError(f"aesthetic reward: {path} does not hold a state dict")
    mlp = AestheticMLP(embed_dim)
    try:
        mlp.load_state_dict(state)
    except RuntimeError as err:
        raise DiffalignError(
            f"aesthetic reward: weights in {path} do not fit the MLP with embed_dim={embed_dim}: "
            f"{str(err).strip().splitlines()[0]}"
        ) from None
    return mlp.eval().requires_grad_(False)


@REWARDS.register("aesthetic")
class AestheticScore(Reward):
    """LAION aesthetic score (about 1..10) of float [0, 1] images.

    Options: ``mlp_weights`` (LAION state dict file; ``None`` downloads it), ``model_name`` /
    ``pretrained`` / ``quick_gelu`` (the CLIP backbone, as for the ``clip`` reward; the released
    MLP expects OpenAI ViT-L/14), and ``embed_dim`` (CLIP embedding width, 768 for ViT-L/14).
    """

    name = "aesthetic"
    differentiable = True

    def __init__(
        self,
        *,
        mlp_weights: str | os.PathLike | None = None,
        model_name: str = DEFAULT_MODEL,
        pretrained: str | os.PathLike | None = DEFAULT_PRETRAINED,
        quick_gelu: bool | None = None,
        embed_dim: int = 768,
    ):
        super().__init__()
        self.mlp = load_aesthetic_mlp(mlp_weights, embed_dim)  # first: the cheap failure
        self.backbone = load_clip_backbone(model_name, pretrained, quick_gelu)
        clip_dim = self.backbone.embed_dim
        if clip_dim is not None and clip_dim != embed_dim:
            raise DiffalignError(
                f"aesthetic reward: CLIP model {model_name} gives {clip_dim}-dim embeddings but the MLP "
                f"expects embed_dim={embed_dim}"
            )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        embeddings = self.backbone.encode_image(images)  # L2-normalised, as LAION's inference code
        weight = self.mlp.layers[0].weight
        return self.mlp(embeddings.to(device=weight.device, dtype=weight.dtype)).squeeze(-1).to(images.device)
