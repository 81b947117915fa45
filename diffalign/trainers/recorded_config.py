"""Is a config the run recorded in ``DIR/config.yaml``? Resuming (the CLI, and ``Trainer.resume``) asks.

The config must match the recorded one except for the keys in :data:`RESUMABLE_CHANGES` (so a run can be
extended); a key added to the config after the run was recorded, left at its default, matches too.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import DiffalignError
from .config import to_dict
from .configs import config_class
from .run_dir import CONFIG_FILE

RESUMABLE_CHANGES = {"train.max_steps", "train.checkpoint_every", "train.log_every", "train.keep_checkpoints", "train.report_to"}
# Either checkpoint format (unsharded, or DCP shards) loads onto any number of processes, sharded or not; the
# data stay the same when gradient_accumulation_steps x processes does, which Trainer.resume checks against the
# checkpoint's data position. Where the reference and EMA wait (train.offload) and how long a collective may
# wait change no number.
RESUMABLE_CHANGES |= {"train.sharding", "train.gradient_accumulation_steps", "train.offload", "train.collective_timeout_s"}


def _flatten(node: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in node.items():
        if isinstance(value, dict) and value and prefix + key not in ("reward.options", "kernel_options"):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[prefix + key] = value
    return flat


def _defaults(method) -> dict:
    """The flattened default config of a method ({} for an unknown one)."""
    try:
        return _flatten(to_dict(config_class(method)()))
    except DiffalignError:
        return {}


def check_same_run(recorded: dict, current: dict, directory: Path) -> None:
    old, new = _flatten(recorded), _flatten(current)
    # a key added to the config after the run was recorded, left at its default, is the same run
    defaults = _defaults(current.get("method"))
    for key in sorted(set(old) | set(new)):
        if key not in old and key in defaults and new.get(key) == defaults[key]:
            continue
        if key not in RESUMABLE_CHANGES and old.get(key) != new.get(key):
            raise DiffalignError(
                f"{directory} holds a run with {key}={old.get(key)!r}, not {new.get(key)!r}; "
                "pass --overwrite to start afresh or use another --output-dir"
            )


def check_recorded_config(directory: Path, config_dict: dict) -> None:
    """Refuse ``config_dict`` unless it is the run recorded in ``DIR/config.yaml`` (up to
    :data:`RESUMABLE_CHANGES`); the CLI and the Python API (``Trainer.resume``) both call it."""
    from ..safe_yaml import load  # yaml only when a run is resumed

    recorded_path = Path(directory) / CONFIG_FILE
    try:
        recorded = load(recorded_path.read_text(encoding="utf-8"), f"run config {recorded_path}")
    except (DiffalignError, UnicodeDecodeError):
        raise DiffalignError(f"corrupt run config {recorded_path}; pass --overwrite to start afresh") from None
    if not isinstance(recorded, dict):
        raise DiffalignError(f"corrupt run config {recorded_path} (not a mapping); pass --overwrite to start afresh")
    check_same_run(recorded, config_dict, Path(directory))
