"""Inference-time samplers behind one interface: ``get(name, **options).sample(model, reward, ...)``."""

from . import ancestral, best_of_n, dts, dts_paper, hypernoise, reno, sir, smc  # noqa: F401  (registers the samplers)
from .ancestral import AncestralSampler
from .base import SampleOutput, Sampler
from .best_of_n import BestOfNSampler
from .dts import DTSSampler
from .dts_paper import DTSStarSampler, PaperDTSSampler
from .hypernoise import HyperNoiseSampler
from .reno import ReNOSampler
from .sir import SIRSampler
from .smc import SMCSampler
from .registry import SAMPLERS, get, names

__all__ = ["AncestralSampler", "BestOfNSampler", "DTSSampler", "DTSStarSampler", "HyperNoiseSampler", "PaperDTSSampler",
           "ReNOSampler", "SIRSampler", "SMCSampler", "SAMPLERS", "SampleOutput", "Sampler", "get", "names"]
