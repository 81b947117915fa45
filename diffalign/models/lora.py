"""LoRA through peft on the diffusers network itself, saved in diffusers' pipeline LoRA format.

The adapters live inside the network (``network.add_adapter``), so the reference policy of DPO, GRPO's
KL and RLG is the *same* network with its adapters disabled: no second copy of the weights.

Saving goes through the stock pipeline class's ``save_lora_weights`` so the keys carry the pipeline
prefix (``transformer.`` / ``unet.``) and the adapter config (rank, alpha) rides along as metadata.
The network-level ``save_lora_adapter`` writes un-prefixed keys, which a pipeline's
``load_lora_weights`` ignores with only a warning -- the silent no-op this module exists to avoid;
:func:`load_lora` therefore refuses a file that sets no adapter weights.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from ..errors import DiffalignError
from .loading import run_final_dir
from .noise_hypernetwork import CONFIG_NAME as HYPERNETWORK_CONFIG

WEIGHT_NAME = "pytorch_lora_weights.safetensors"
ADAPTER_NAME = "default"


@dataclass(frozen=True)
class LoraFormat:
    """How one network class appears inside its stock pipeline's LoRA file."""

    prefix: str
    pipeline: Callable[[], type]
    layers_argument: str
    metadata_argument: str


def _sd_pipeline():
    from diffusers import StableDiffusionPipeline

    return StableDiffusionPipeline


def _sd3_pipeline():
    from diffusers import StableDiffusion3Pipeline

    return StableDiffusion3Pipeline


# network class name -> its pipeline's LoRA format (one entry per family)
LORA_FORMATS = {
    "UNet2DConditionModel": LoraFormat("unet", _sd_pipeline, "unet_lora_layers", "unet_lora_adapter_metadata"),
    "SD3Transformer2DModel": LoraFormat("transformer", _sd3_pipeline, "transformer_lora_layers", "transformer_lora_adapter_metadata"),
}


def lora_format(network: nn.Module) -> LoraFormat:
    name = type(network).__name__
    if name not in LORA_FORMATS:
        raise DiffalignError(f"LoRA is not supported for {name}; valid choices: {', '.join(sorted(LORA_FORMATS))}")
    return LORA_FORMATS[name]


def check_lora_rank(network: nn.Module, rank: int, target_modules: list[str]) -> None:
    """Refuse a rank above min(in, out) of every targeted layer before peft allocates it: such a rank
    adds nothing a smaller one cannot express, and ``lora_rank: 100000000`` would allocate tens of GB."""
    widths = [min(module.in_features, module.out_features) for name, module in network.named_modules()
              if isinstance(module, nn.Linear) and any(name == m or name.endswith("." + m) for m in target_modules)]
    if widths and rank > max(widths):
        raise DiffalignError(f"model.lora_rank={rank} exceeds every targeted layer's min(in, out) (at most {max(widths)} "
                             f"in {type(network).__name__}); a LoRA cannot use more, so choose lora_rank <= {max(widths)}")


def add_lora(network: nn.Module, rank: int, alpha: float, target_modules: list[str], seed: int) -> list[nn.Parameter]:
    """Inject a LoRA adapter (B = 0, so the network is unchanged) and return its trainable parameters."""
    from peft import LoraConfig

    lora_format(network)
    present = {name.rsplit(".", 1)[-1] for name, _ in network.named_modules()} | {name for name, _ in network.named_modules()}
    missing = [m for m in target_modules if not any(n == m or n.endswith("." + m) for n in present)]
    if missing:
        raise DiffalignError(f"LoRA target modules {missing} not found in {type(network).__name__}")
    check_lora_rank(network, rank, target_modules)
    network.requires_grad_(False)
    with torch.random.fork_rng(devices=[]):  # lora_A's init draws from the global RNG; keep it seeded
        torch.manual_seed(seed)
        config = LoraConfig(r=rank, lora_alpha=alpha, init_lora_weights=True, target_modules=list(target_modules))
        network.add_adapter(config, adapter_name=ADAPTER_NAME)
    params = [p for name, p in network.named_parameters() if "lora_" in name]
    for p in params:
        p.requires_grad_(True)
    return params


@contextlib.contextmanager
def adapters_disabled(network: nn.Module):
    """The reference policy: the same network with its LoRA switched off for the block."""
    if not getattr(network, "_hf_peft_config_loaded", False):
        yield
        return
    network.disable_adapters()
    try:
        yield
    finally:
        network.enable_adapters()


def lora_state_dict(network: nn.Module) -> dict[str, torch.Tensor]:
    from peft.utils import get_peft_model_state_dict

    return get_peft_model_state_dict(network, adapter_name=ADAPTER_NAME)


def save_lora(network: nn.Module, directory) -> Path:
    """Write ``directory/pytorch_lora_weights.safetensors`` in the stock pipeline's format."""
    fmt = lora_format(network)
    state = {k: v.detach().to(torch.float32).contiguous().cpu() for k, v in lora_state_dict(network).items()}
    metadata = network.peft_config[ADAPTER_NAME].to_dict()
    metadata["target_modules"] = sorted(metadata["target_modules"])  # a set in peft; JSON needs a list
    fmt.pipeline().save_lora_weights(
        str(directory), weight_name=WEIGHT_NAME, safe_serialization=True,
        **{fmt.layers_argument: state, fmt.metadata_argument: metadata},
    )
    return Path(directory) / WEIGHT_NAME


def _check_lora_shapes(network: nn.Module, file: Path, prefix: str) -> None:
    """One line for a LoRA made for a different-size network, before diffusers and peft print a
    state-dict error per tensor (27 lines for digits-flow): shapes come from the file's header."""
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as f:
        for key in f.keys():
            name, sep, rest = key[len(prefix) + 1:].partition(".lora_")
            if not key.startswith(prefix + ".") or not sep:
                continue
            try:
                module = network.get_submodule(name)
            except AttributeError:
                raise DiffalignError(f"LoRA file {file} does not fit {type(network).__name__}: it has no layer {name!r}") from None
            if not isinstance(module, nn.Linear):
                base = getattr(module, "base_layer", None)
                module = base if isinstance(base, nn.Linear) else None
            if module is None:
                continue
            shape = tuple(f.get_slice(key).get_shape())
            expected = (None, module.in_features) if rest.startswith("A") else (module.out_features, None)
            if len(shape) != 2 or any(e is not None and e != got for e, got in zip(expected, shape)):
                raise DiffalignError(
                    f"LoRA file {file} was made for a different-size model: {name} is {module.in_features} -> "
                    f"{module.out_features} here, but the file's {key.rsplit('.', 2)[-2]} is {list(shape)}")


def load_lora(network: nn.Module, path) -> None:
    """Load a diffusers-format LoRA (a directory or a ``.safetensors`` file) into ``network``."""
    from safetensors import SafetensorError, safe_open

    path = run_final_dir(Path(path), WEIGHT_NAME)
    if path.is_dir() and (path / HYPERNETWORK_CONFIG).is_file():
        # its LoRA file has the model's keys, so it would load silently and change the model's outputs
        raise DiffalignError(f"{path} holds a noise hypernetwork ({HYPERNETWORK_CONFIG}), not a model LoRA; "
                             f"use it with --sampler hypernoise --option path={path}")
    file = path / WEIGHT_NAME if path.is_dir() else path
    if not file.is_file():
        raise DiffalignError(f"no LoRA weights at {file} (expected a directory with {WEIGHT_NAME}, or a run directory with final/)")
    fmt = lora_format(network)
    try:
        with safe_open(str(file), framework="pt") as f:
            keys = list(f.keys())
    except (SafetensorError, OSError) as err:
        raise DiffalignError(f"corrupt LoRA file {file}: {err}") from None
    if not any(k.startswith(fmt.prefix + ".") for k in keys):
        raise DiffalignError(
            f"LoRA file {file} has no '{fmt.prefix}.' weights for {type(network).__name__} (keys look like {keys[:1]}); "
            "it would load as a no-op"
        )
    _check_lora_shapes(network, file, fmt.prefix)
    try:
        network.load_lora_adapter(str(file.parent), weight_name=file.name, prefix=fmt.prefix, adapter_name=ADAPTER_NAME)
    except Exception as err:  # diffusers/peft raise many types for mismatched shapes or keys
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DiffalignError(f"LoRA file {file} does not fit {type(network).__name__}: {first}") from None
