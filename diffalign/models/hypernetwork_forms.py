"""The registry of HyperNoise's two forms of f, and building or loading one by its form's name.

It lives here, not in :mod:`~diffalign.models.noise_hypernetwork`, because a registry must import the
forms it lists and each form imports that base class: the base importing its forms was a cycle.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import DiffalignError, choice_error
from .loading import run_final_dir
from .lora_noise_hypernetwork import LoRANoiseHypernetwork
from .mlp_noise_hypernetwork import MLPNoiseHypernetwork
from .noise_hypernetwork import CONFIG_NAME, NoiseHypernetwork

# form name (hypernoise.json's "form") -> its class
HYPERNETWORK_FORMS: dict[str, type[NoiseHypernetwork]] = {"lora": LoRANoiseHypernetwork, "mlp": MLPNoiseHypernetwork}


def build_hypernetwork(form: str, model, **options) -> NoiseHypernetwork:
    """A zero-initialised hypernetwork of ``form`` ("lora" or "mlp") for the generator ``model``."""
    if form not in HYPERNETWORK_FORMS:
        raise choice_error("hypernetwork form", form, list(HYPERNETWORK_FORMS))
    return HYPERNETWORK_FORMS[form](model, **options)


def load_hypernetwork(path, model) -> NoiseHypernetwork:
    """A trained hypernetwork (``diffalign train configs/hypernoise_digits.yaml`` writes ``DIR/final``)
    for the generator ``model``."""
    directory = run_final_dir(Path(path), CONFIG_NAME)  # a run directory stands for its final/, as for --lora
    config_file = directory / CONFIG_NAME
    if not config_file.is_file():
        raise DiffalignError(f"no noise hypernetwork at {directory} (expected {CONFIG_NAME}; train one with 'diffalign train configs/hypernoise_digits.yaml')")
    try:
        config = json.loads(config_file.read_text())
        form = config.pop("form")
    except (ValueError, KeyError, AttributeError):
        raise DiffalignError(f"corrupt {config_file}: expected a JSON object with a 'form' key") from None
    hypernetwork = build_hypernetwork(form, model, **config)
    hypernetwork.load_weights(directory)
    return hypernetwork.eval().requires_grad_(False)
