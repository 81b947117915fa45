"""diffusers integration: family glue (SD1.5, SDXL, SD3, FLUX, Wan video) and :class:`AlignedPipeline`."""

from .aligned import OUTPUT_TYPES, AlignedPipeline, denoiser_from_pipe
from .attention import ATTENTION_BACKENDS, check_attention, enable_attention
from .family import PipelineFamily
from .families import FAMILIES, family_of
from .prompts import PromptCondition

__all__ = [
    "ATTENTION_BACKENDS",
    "AlignedPipeline",
    "FAMILIES",
    "OUTPUT_TYPES",
    "PipelineFamily",
    "PromptCondition",
    "check_attention",
    "denoiser_from_pipe",
    "enable_attention",
    "family_of",
]
