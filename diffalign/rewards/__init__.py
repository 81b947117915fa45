"""Rewards: functions from float [0, 1] NCHW images to ``(B,)`` scores, higher is better.

``get(name, **options)`` builds a registered reward, ``names()`` lists them, and
:func:`as_reward` accepts a :class:`Reward`, a plain callable or a name. Registered rewards:

- ``compressibility`` / ``incompressibility``: minus / plus the JPEG size in kB (DDPO).
- ``digit``: log p(target | x) under the embedded 8x8 digit classifier.
- ``clip``: CLIP score against a prompt (open_clip).
- ``aesthetic``: LAION aesthetic predictor on CLIP ViT-L/14 embeddings.
- ``weighted-sum``: a weighted sum of other rewards.
- ``noisy-reward``: a trained reward model on noisy samples r_phi(x_t, t) (Flow-NRG guidance).
- ``pickscore``: PickScore (Pick-a-Pic's CLIP-H preference model, transformers).
- ``clipscore``: CLIPScore on transformers' CLIP ViT-L/14.
- ``hpsv2``: Human Preference Score v2.1 (open_clip ViT-H-14).
- ``imagereward``: ImageReward (BLIP ViT-L + cross-attending BERT + MLP, transformers' BLIP classes).
- ``shapes-verifier``: GenEval-style programmatic check of a shapes-world image against its caption.
- ``remote``: a reward served by ``diffalign serve-reward`` over HTTP (:mod:`.server`, :mod:`.remote`).

The hub rewards load ``from_pretrained`` lazily, preprocess in torch (:mod:`.pixel_preprocess`,
differentiable) and take ``path=DIR`` for a local copy (docs/rewards.md).

Importing this package registers all of them but imports no heavy optional dependency:
open_clip and huggingface_hub are imported only when a CLIP-based reward is built.
"""

from .base import CallableReward, Reward, as_reward
from .registry import REWARDS, get, names
from .compressibility import JpegCompressibility, JpegIncompressibility, jpeg_sizes_kb
from .digit import DigitReward, load_digit_classifier
from .clip_backbone import ClipBackbone, load_clip_backbone
from .clip import ClipScore
from .aesthetic import AestheticMLP, AestheticScore, load_aesthetic_mlp
from .weighted import WeightedSum
from .noisy import NoisyReward
from .noisy_model import NoisyRewardNet
from .pickscore import PickScore
from .clipscore import HFClipScore
from .hpsv2 import HPSv2
from .imagereward import ImageReward
from .async_scoring import AsyncScorer
from .remote import RemoteReward, RemoteRewardError
# registers "shapes-verifier" (numpy + the grammar; scipy is imported when it scores). A module import, not a
# name import, so that importing diffalign.shapes.verifier first (it imports .base from here) is no cycle
from ..shapes import verifier as _shapes_verifier  # noqa: E402,F401

__all__ = [
    "REWARDS",
    "AestheticMLP",
    "AestheticScore",
    "AsyncScorer",
    "CallableReward",
    "ClipBackbone",
    "ClipScore",
    "HFClipScore",
    "HPSv2",
    "ImageReward",
    "PickScore",
    "DigitReward",
    "JpegCompressibility",
    "JpegIncompressibility",
    "NoisyReward",
    "NoisyRewardNet",
    "RemoteReward",
    "RemoteRewardError",
    "Reward",
    "WeightedSum",
    "as_reward",
    "get",
    "jpeg_sizes_kb",
    "load_aesthetic_mlp",
    "load_clip_backbone",
    "load_digit_classifier",
    "names",
]
