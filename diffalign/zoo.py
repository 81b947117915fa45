"""`load_model`: the embedded digits models, or any local diffusers model/pipeline directory.

The embedded models are ordinary diffusers directories shipped inside the package (``diffalign/data``),
so they go through exactly the same loader as a user's SD1.5 or SD3 checkout:

    <dir>/unet/ or <dir>/transformer/   the network (config.json + safetensors)
    <dir>/scheduler/                     its diffusers scheduler config (schedule + prediction type)
    <dir>/vae/                           optional; latents are decoded through it
    <dir>/class_embeddings.safetensors   optional learned class "prompts" (embedded models)

A full pipeline directory (``model_index.json``, as ``pipe.save_pretrained`` writes) is loaded as that
pipeline and turned into its family's denoiser (:func:`diffalign.pipelines.denoiser_from_pipe`): with
``text_encoder*/`` and ``tokenizer*/`` present, ``cond="a prompt"`` works through the pipeline's own
``encode_prompt``, and the empty prompt is the null condition of CFG. That is why this module sits above
:mod:`diffalign.pipelines`, outside :mod:`diffalign.models`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import torch

from .errors import DiffalignError
from .models.class_condition import FILE_NAME as CLASS_EMBEDDINGS, ClassEmbeddingCondition
from .models.denoiser import Denoiser
from .models.loading import read_json
from .schedules import FlowSchedule, Schedule, VPSchedule

DATA_DIR = Path(__file__).resolve().parent / "data"
EMBEDDED = {"digits": DATA_DIR / "digits", "digits-flow": DATA_DIR / "digits-flow", "digits-fast": DATA_DIR / "digits-fast",
            "shapes": DATA_DIR / "shapes"}  # shapes: a full StableDiffusionPipeline directory (text-to-image world)
# Each embedded model's own sampling defaults. digits-fast is a 2-step distilled generator: the flow
# SDE's noise (its schedule's default) turns its 2 steps into pure noise, only Euler gives digits.
MODEL_DEFAULTS = {
    "digits": {"kernel": None, "steps": 50},
    "digits-flow": {"kernel": None, "steps": 50},
    "digits-fast": {"kernel": "euler", "steps": 2},
    "shapes": {"kernel": None, "steps": 20},  # its benchmark setting (benchmarks/shapes_base.py)
}


@dataclass(frozen=True)
class _Family:
    """How to load one diffusers network class and interpret its scheduler config."""

    subfolder: str
    network: Callable[[], type]
    adapter: Callable[[], type]
    schedule: Callable[[dict], Schedule]
    prediction: Callable[[dict], str]


def _vp_schedule(scheduler_config: dict) -> Schedule:
    from diffusers import DDPMScheduler

    # DDPMScheduler computes alphas_cumprod for every beta_schedule variant diffusers knows.
    keys = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule", "trained_betas")
    return VPSchedule.from_scheduler(DDPMScheduler(**{k: scheduler_config[k] for k in keys if k in scheduler_config}))


def _vp_prediction(scheduler_config: dict) -> str:
    from .models.diffusers_adapters import PREDICTION_TYPES

    kind = scheduler_config.get("prediction_type", "epsilon")
    if kind not in PREDICTION_TYPES:
        raise DiffalignError(f"unsupported prediction_type {kind!r}; valid choices: {', '.join(PREDICTION_TYPES)}")
    return PREDICTION_TYPES[kind]


def _unet_family() -> _Family:
    from diffusers import UNet2DConditionModel

    from .models.diffusers_adapters import UNetDenoiser

    return _Family("unet", lambda: UNet2DConditionModel, lambda: UNetDenoiser, _vp_schedule, _vp_prediction)


def _sd3_family() -> _Family:
    from diffusers import SD3Transformer2DModel

    from .models.diffusers_adapters import SD3Denoiser

    return _Family(
        "transformer",
        lambda: SD3Transformer2DModel,
        lambda: SD3Denoiser,
        lambda cfg: FlowSchedule(shift=cfg.get("shift", 1.0), num_train_timesteps=cfg.get("num_train_timesteps", 1000)),
        lambda cfg: "flow",
    )


# network class name (config.json "_class_name") -> family
FAMILIES: dict[str, Callable[[], _Family]] = {
    "UNet2DConditionModel": _unet_family,
    "SD3Transformer2DModel": _sd3_family,
}


def load_model(
    name_or_path: str,
    device: Optional[str | torch.device] = None,
    dtype: Optional[torch.dtype] = None,
    lora: Optional[str | os.PathLike] = None,
) -> Denoiser:
    """Load a denoiser: ``"digits"``, ``"digits-flow"``, ``"digits-fast"`` (few-step, 1-4 Euler steps), ``"shapes"``
    (the text-to-image world: ``cond="two red circles"``), a local diffusers directory, or a hub id (online).

    ``lora``: a LoRA in diffusers' format (a directory with ``pytorch_lora_weights.safetensors``, as
    ``diffalign train`` writes to ``DIR/final``) attached to the network.

    Raises :class:`DiffalignError` (one line, naming the path) for unknown names, missing folders,
    unsupported networks and missing or corrupt weights.
    """
    directory = _resolve(name_or_path)
    if (directory / "model_index.json").exists() and not (directory / CLASS_EMBEDDINGS).exists():
        return _load_pipeline_model(directory, device, dtype, lora)
    network_dir = _network_dir(directory)
    network_config = read_json(network_dir / "config.json")
    class_name = network_config.get("_class_name")
    if class_name not in FAMILIES:
        raise DiffalignError(
            f"unsupported network {class_name!r} in {network_dir}; valid choices: {', '.join(sorted(FAMILIES))}"
        )
    family = FAMILIES[class_name]()
    scheduler_config = read_json(directory / "scheduler" / "scheduler_config.json")
    network = _load_network(family.network(), network_dir)

    condition = ClassEmbeddingCondition.from_pretrained(directory) if (directory / CLASS_EMBEDDINGS).exists() else None
    decoder = _decoder(directory)
    shape = (network_config["in_channels"], network_config["sample_size"], network_config["sample_size"])
    model = family.adapter()(
        network,
        schedule=family.schedule(scheduler_config),
        prediction=family.prediction(scheduler_config),
        shape=shape,
        condition_encoder=condition,
        decoder=decoder,
    )
    if lora is not None:
        from .models.lora import load_lora

        load_lora(network, lora)
    model = model.eval().requires_grad_(False)
    embedded = next((name for name, path in EMBEDDED.items() if path.resolve() == directory.resolve()), None)
    defaults = MODEL_DEFAULTS.get(embedded, {})  # by directory, so loading digits-fast by its path agrees
    model.schedule.preferred_kernel = defaults.get("kernel")
    model.default_steps = defaults.get("steps", 50)  # what `diffalign sample` uses without --steps
    return model.to(device=device, dtype=dtype) if (device or dtype) else model


def _resolve(name_or_path: str) -> Path:
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise DiffalignError(f"model must be a name or a path, got {name_or_path!r}")
    if str(name_or_path) in EMBEDDED:
        directory = EMBEDDED[str(name_or_path)]
        if not directory.is_dir():
            raise DiffalignError(f"embedded model {name_or_path!r} is missing from {directory}; reinstall diffalign")
        return directory
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise DiffalignError(f"model path {path} is a file; pass a diffusers model or pipeline directory")
    return _download(str(name_or_path))


def _download(repo_id: str) -> Path:
    from .cli_validation import hub_download_message, hub_offline

    valid = ", ".join(sorted(EMBEDDED))
    if repo_id.count("/") != 1:
        raise DiffalignError(f"unknown model {repo_id!r}: not an embedded model ({valid}), an existing directory "
                             "nor a hub id (owner/name)")
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.txt", "*.model"]
    try:  # already in the local hub cache
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except Exception:  # not cached: huggingface_hub raises several types here
        pass
    if hub_offline():
        raise DiffalignError(hub_download_message(repo_id, "HF_HUB_OFFLINE is set and it is not in the hub cache"))
    try:
        return Path(snapshot_download(repo_id, allow_patterns=patterns))
    except Exception as err:  # network errors come in many types; report one line
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DiffalignError(hub_download_message(repo_id, f"the hub could not be reached: {type(err).__name__}: {first}")) from None


def _network_dir(directory: Path) -> Path:
    for sub in ("unet", "transformer"):
        if (directory / sub / "config.json").exists():
            return directory / sub
    raise DiffalignError(f"{directory} has no unet/ or transformer/ folder with a config.json")


def _load_network(cls: type, network_dir: Path):
    weights = list(network_dir.glob("*.safetensors"))
    if not weights:
        raise DiffalignError(f"missing weights file (*.safetensors) in {network_dir}")
    try:
        return cls.from_pretrained(network_dir, low_cpu_mem_usage=False)
    except Exception as err:  # diffusers raises OSError, ValueError, SafetensorError... for bad files
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DiffalignError(f"corrupt or incompatible weights in {network_dir}: {first}") from None


def _decoder(directory: Path):
    from .models.diffusers_adapters import PixelDecoder, VAEDecoder

    if (directory / "vae" / "config.json").exists():
        from diffusers import AutoencoderKL

        return VAEDecoder(_load_network(AutoencoderKL, directory / "vae"))
    return PixelDecoder()


def load_pipeline(name_or_path: str, device: Optional[str | torch.device] = None, dtype: Optional[torch.dtype] = None):
    """The stock diffusers pipeline of an embedded model (``"shapes"``) or a pipeline directory.

    It is exactly ``DiffusionPipeline.from_pretrained(dir)`` (for ``"shapes"``: a ``StableDiffusionPipeline``),
    so everything diffusers offers works on it, and ``AlignedPipeline.from_pipe`` accepts it.
    """
    directory = _resolve(name_or_path)
    if not (directory / "model_index.json").exists():
        pipelines = ", ".join(name for name, path in EMBEDDED.items() if (path / "model_index.json").exists())
        raise DiffalignError(f"{name_or_path!r} is not a pipeline directory (no model_index.json); embedded "
                             f"pipelines: {pipelines or '(none)'}")
    pipe = _from_pretrained(directory, dtype)
    if device is not None:
        pipe.to(device)
    return pipe


def _from_pretrained(directory: Path, dtype):
    from diffusers import DiffusionPipeline
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    index = read_json(directory / "model_index.json")
    diffusers_logging.disable_progress_bar()  # "Loading pipeline components": noise on a CLI's stderr
    transformers_logging.disable_progress_bar()
    try:
        pipe = DiffusionPipeline.from_pretrained(str(directory), torch_dtype=dtype, low_cpu_mem_usage=False,
                                                 **_absent_components(directory, index))
    except Exception as err:  # diffusers/transformers raise many types for missing or bad files
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DiffalignError(f"could not load the {index.get('_class_name', 'diffusers')} pipeline in {directory}: {first}") from None
    finally:
        diffusers_logging.enable_progress_bar()
        transformers_logging.enable_progress_bar()
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _load_pipeline_model(directory: Path, device, dtype, lora) -> Denoiser:
    from .pipelines import denoiser_from_pipe

    pipe = _from_pretrained(directory, dtype)
    if device is not None:
        pipe.to(device)
    model = denoiser_from_pipe(pipe)
    if lora is not None:
        from .models.lora import load_lora

        load_lora(model.network, lora)
    embedded = next((name for name, path in EMBEDDED.items() if path.resolve() == directory.resolve()), None)
    if embedded in MODEL_DEFAULTS:  # the embedded shapes pipeline: its own step count, as the digits models
        model.default_steps = MODEL_DEFAULTS[embedded]["steps"]
    return model.eval().requires_grad_(False)


def _absent_components(directory: Path, index: dict) -> dict:
    """Components the pipeline class expects but the directory lacks (saved as None): pass them as None."""
    import diffusers

    pipeline_class = getattr(diffusers, str(index.get("_class_name")), None)
    if pipeline_class is None or not hasattr(pipeline_class, "_get_signature_keys"):
        return {}
    expected, _ = pipeline_class._get_signature_keys(pipeline_class)
    return {name: None for name in expected if not (directory / name).is_dir()}
