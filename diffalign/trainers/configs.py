"""The methods' Config registry, and loading a config file into its method's Config (torch-free).

A registry must import the Configs it lists and each Config imports the base in
:mod:`~diffalign.trainers.config`, so it lives here: the base importing its methods was a cycle.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DiffalignError, choice_error
from .config import TrainerConfig, apply_overrides, build, read_yaml
from .flow_dpo_config import FlowDPOConfig
from .grpo_config import GRPOConfig
from .hypernoise_config import HyperNoiseConfig
from .noisy_reward_config import NoisyRewardConfig
from .rwr_config import RWRConfig

# method name (a config's ``method`` key) -> its Config dataclass
CONFIGS: dict[str, type[TrainerConfig]] = {
    "flow_dpo": FlowDPOConfig,
    "grpo": GRPOConfig,
    "hypernoise": HyperNoiseConfig,
    "noisy_reward": NoisyRewardConfig,
    "rwr": RWRConfig,
}
METHODS = tuple(CONFIGS)


def config_class(method) -> type:
    """The Config dataclass of a method name."""
    if method not in CONFIGS:
        raise choice_error("trainer method", method, list(METHODS))
    return CONFIGS[method]


def config_from_dict(data: dict) -> TrainerConfig:
    """Build and check the method's Config from a raw mapping (its ``method`` key picks the class)."""
    if data.get("method") is None:
        raise DiffalignError(f"config has no 'method' key; valid choices: {', '.join(METHODS)}")
    config = build(config_class(data["method"]), data)
    config.validate()
    return config


def load_config(path, overrides: list[str] = ()) -> TrainerConfig:
    """Read a YAML preset, apply ``key.path=value`` overrides, and check every key, type and value."""
    return config_from_dict(_resolve_prompt_paths(apply_overrides(read_yaml(path), list(overrides)), Path(path)))


def _resolve_prompt_paths(data: dict, config_path: Path) -> dict:
    """A relative prompt-file path is taken from the working directory, or else from the config file's
    directory (so a preset finds the prompt files shipped beside it from anywhere)."""
    section = data.get("data")
    if not isinstance(section, dict):
        return data
    for key in ("train_prompts", "test_prompts"):
        value = section.get(key)
        if isinstance(value, str) and not Path(value).is_absolute() and not Path(value).exists():
            beside = config_path.parent / value
            if beside.exists():
                section[key] = str(beside)
    return data
