import pytest

from diffalign.trainers import config_from_dict

TINY_TRAIN = {"max_steps": 2, "learning_rate": 1e-3, "checkpoint_every": 0, "report_to": "none"}
TINY_MODEL = {"name": "digits-flow", "lora_rank": 2, "lora_target_modules": ["to_q", "to_v"]}

# the smallest settings of each method that still exercise every code path
TINY_METHOD = {
    "flow_dpo": {"group_size": 3, "pairs_per_micro_batch": 2, "noise_draws": 2, "sample_steps": 3},
    "rwr": {"group_size": 3, "groups_per_micro_batch": 1, "noise_draws": 2, "sample_steps": 3},
    "grpo": {"group_size": 4, "groups_per_micro_batch": 1, "sample_steps": 4},
    "noisy_reward": {"pool_size": 64, "holdout_pairs": 64, "sample_steps": 3, "pairs_per_micro_batch": 16, "hidden": 32},
}


def tiny_raw(method: str, model_name: str = "digits-flow", **sections) -> dict:
    raw = {"method": method, "seed": 0, "model": {**TINY_MODEL, "name": model_name}, "reward": {"name": "digit", "options": {"target": 3}},
           "train": dict(TINY_TRAIN), **TINY_METHOD[method]}
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            raw[key] = {**raw[key], **value}
        else:
            raw[key] = value
    return raw


@pytest.fixture
def tiny_config():
    def make(method, model_name="digits-flow", **sections):
        return config_from_dict(tiny_raw(method, model_name, **sections))

    return make


def sigkill_once_written(process, path, timeout: float = 300.0) -> None:
    """SIGKILL ``process`` as soon as ``path`` exists (a checkpoint), and wait for it."""
    import signal
    import time

    deadline = time.time() + timeout
    while not path.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
