"""diffalign: align pretrained diffusion and flow models to rewards.

    import diffalign as da
    model = da.load_model("digits")
    out = da.sample(model, da.rewards.get("digit", target=3), sampler="best-of-n", num_samples=16, nfe=20_000)

Importing diffalign loads torch only; diffusers, open_clip, transformers and scikit-learn are imported
when first needed.
"""

from . import kernels, rewards, samplers
from .api import sample
from .errors import DiffalignError
from .kernels import DDIM, Euler, FlowSDE, GaussianStep, Kernel
from .models import (
    BudgetExceeded,
    CFGDenoiser,
    Denoiser,
    DenoiserWrapper,
    FunctionDenoiser,
    NFECounter,
    Prediction,
    load_model,
)
from .samplers import SampleOutput, Sampler
from .schedules import FlowSchedule, Schedule, VPSchedule

__version__ = "0.1.0"

__all__ = [
    "BudgetExceeded",
    "CFGDenoiser",
    "DDIM",
    "Denoiser",
    "DenoiserWrapper",
    "DiffalignError",
    "Euler",
    "FlowSDE",
    "FlowSchedule",
    "FunctionDenoiser",
    "GaussianStep",
    "Kernel",
    "NFECounter",
    "Prediction",
    "SampleOutput",
    "Sampler",
    "Schedule",
    "VPSchedule",
    "kernels",
    "load_model",
    "rewards",
    "sample",
    "samplers",
    "__version__",
]
