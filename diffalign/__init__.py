"""diffalign: align pretrained diffusion and flow models to rewards.

    import diffalign as da
    model = da.load_model("digits")
    out = da.sample(model, da.rewards.get("digit", target=3), sampler="best-of-n", num_samples=16, nfe=20_000)

``import diffalign`` is instant: the public names below are imported on first use (PEP 562), so the
command line can refuse a bad name before paying for torch. torch loads with the first model, sampler
or reward; diffusers, open_clip, transformers and scikit-learn only when first needed.
Add a public name by listing it in ``_EXPORTS`` (name -> module), never by an eager import here:
``tests/test_cli_fast.py`` checks that validating CLI input imports no torch.
"""

from __future__ import annotations

import importlib
import importlib.util

from .errors import DiffalignError, SamplingWarning
from .version import __version__

# public name -> the submodule (relative to this package) that defines it
_EXPORTS = {
    "sample": ".api",
    "save_grid": ".images",
    "kernels": None,
    "rewards": None,
    "samplers": None,
    "models": None,
    "trainers": None,
    "guidance": None,
    "DDIM": ".kernels",
    "Euler": ".kernels",
    "FlowSDE": ".kernels",
    "GaussianStep": ".kernels",
    "Kernel": ".kernels",
    "BudgetExceeded": ".models",
    "CFGDenoiser": ".models",
    "Denoiser": ".models",
    "DenoiserWrapper": ".models",
    "FunctionDenoiser": ".models",
    "NFECounter": ".models",
    "Prediction": ".models",
    "RLGDenoiser": ".models",
    "RewardGuidance": ".guidance",
    "load_model": ".zoo",
    "load_pipeline": ".zoo",
    "AlignedPipeline": ".pipelines",
    "SampleOutput": ".samplers",
    "Sampler": ".samplers",
    "FlowSchedule": ".schedules",
    "Schedule": ".schedules",
    "VPSchedule": ".schedules",
}

__all__ = sorted([*_EXPORTS, "DiffalignError", "SamplingWarning", "__version__"])


def __getattr__(name: str):
    if name in _EXPORTS:
        source = _EXPORTS[name]
        value = importlib.import_module(f".{name}" if source is None else source, __name__)
        if source is not None:
            value = getattr(value, name)
    elif not name.startswith("__") and importlib.util.find_spec(f"{__name__}.{name}") is not None:  # any other submodule, e.g. da.oracles
        value = importlib.import_module(f".{name}", __name__)
    else:
        raise AttributeError(f"module 'diffalign' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
