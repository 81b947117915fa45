"""Training checkpoints: safetensors files in a directory that appears atomically.

``DIR/checkpoints/step-000040/`` holds

* ``trainable.safetensors`` -- the trained parameters (LoRA or full), by parameter name;
* ``optimizer.safetensors`` -- every optimizer state tensor (param-group settings in the metadata);
* ``ema.safetensors`` -- the EMA weights, when EMA is on;
* ``rng.safetensors`` -- the torch (CPU and CUDA) and numpy generator states;
* ``state.json`` -- step, data position, LR-scheduler and Python RNG state, and the SHA-256 of every
  file above.

The directory is built under a temporary name and renamed into place, so a SIGKILL leaves either a
complete checkpoint or none. Loading verifies each file's checksum: a corrupt or truncated file is a
one-line error naming it, never silently used.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..atomic import atomic_directory
from ..errors import DiffalignError

STATE_FILE = "state.json"
PATTERN = re.compile(r"^step-(\d+)$")


def checkpoint_dir(root: Path, step: int) -> Path:
    return Path(root) / f"step-{step:06d}"


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (a directory with state.json) under ``root``, oldest first."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = []
    for child in root.iterdir():
        match = PATTERN.match(child.name)
        if match and child.is_dir() and (child / STATE_FILE).is_file():
            found.append((int(match.group(1)), child))
    return sorted(found)


def remove_partial_checkpoints(root: Path) -> list[Path]:
    """Delete the temporary directories a killed run left behind (``.step-NNNNNN.*``); they are never
    read, since only a renamed, complete directory counts as a checkpoint."""
    root = Path(root)
    partial = [child for child in root.glob(".step-*") if child.is_dir()] if root.is_dir() else []
    for child in partial:
        shutil.rmtree(child, ignore_errors=True)
    return partial


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: Optional[dict] = None) -> None:
    from safetensors.torch import save_file

    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    save_file(tensors, str(path), metadata={k: json.dumps(v) for k, v in (metadata or {}).items()})
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = {k: json.loads(v) for k, v in (f.metadata() or {}).items() if k != "format"}
        return {k: f.get_tensor(k) for k in f.keys()}, metadata


# -- optimizer state <-> flat tensors ------------------------------------------------------------
def optimizer_tensors(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    tensors, scalars = {}, {}
    for index, per_param in state_dict["state"].items():
        for name, value in per_param.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{name}"] = value
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def optimizer_state_dict(tensors: dict[str, torch.Tensor], metadata: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in list(tensors.items()) + list(metadata["scalars"].items()):
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    return {"state": state, "param_groups": metadata["param_groups"]}


# -- RNG ---------------------------------------------------------------------------------------
def rng_tensors() -> dict[str, torch.Tensor]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = state
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    tensors["numpy.keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    tensors["numpy.rest"] = torch.tensor([pos, has_gauss], dtype=torch.int64)
    tensors["numpy.cached"] = torch.tensor([cached], dtype=torch.float64)
    return tensors


def restore_rng(tensors: dict[str, torch.Tensor], python_state) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    rest = tensors["numpy.rest"].tolist()
    np.random.set_state(("MT19937", tensors["numpy.keys"].numpy().astype(np.uint32), int(rest[0]), int(rest[1]),
                         float(tensors["numpy.cached"][0])))
    random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))


# -- save / load -------------------------------------------------------------------------------
def save_checkpoint(root: Path, step: int, *, trainable: dict[str, torch.Tensor], optimizer: dict,
                    scheduler: dict, ema: Optional[dict[str, torch.Tensor]], extra: dict, keep: int) -> Path:
    target = checkpoint_dir(root, step)
    with atomic_directory(target) as tmp:
        files = {"trainable.safetensors": (trainable, None)}
        opt_tensors, opt_meta = optimizer_tensors(optimizer)
        files["optimizer.safetensors"] = (opt_tensors, opt_meta)
        files["rng.safetensors"] = (rng_tensors(), None)
        if ema is not None:
            files["ema.safetensors"] = (ema, None)
        for name, (tensors, metadata) in files.items():
            _save_tensors(tensors, tmp / name, metadata)
        state = {
            "step": step,
            "scheduler": scheduler,
            "python_rng": list(random.getstate()),
            "extra": extra,
            "sha256": {name: _sha256(tmp / name) for name in files},
        }
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))
    for _, old in list_checkpoints(root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def load_checkpoint(directory: Path) -> dict:
    """Read and verify a checkpoint; returns its parts (tensors on CPU)."""
    directory = Path(directory)
    state_path = directory / STATE_FILE
    try:
        state = json.loads(state_path.read_text())
        checksums = state["sha256"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DiffalignError(f"corrupt checkpoint file {state_path} ({type(err).__name__}); delete {directory} to resume from the previous checkpoint") from None
    parts = {}
    for name, expected in checksums.items():
        path = directory / name
        if not path.is_file() or _sha256(path) != expected:
            raise DiffalignError(f"corrupt checkpoint file {path} (missing or checksum mismatch); delete {directory} to resume from the previous checkpoint")
        parts[name] = _load_tensors(path)
    return {
        "step": int(state["step"]),
        "trainable": parts["trainable.safetensors"][0],
        "optimizer": optimizer_state_dict(*parts["optimizer.safetensors"]),
        "rng": parts["rng.safetensors"][0],
        "ema": parts["ema.safetensors"][0] if "ema.safetensors" in parts else None,
        "scheduler": state["scheduler"],
        "python_rng": state["python_rng"],
        "extra": state.get("extra", {}),
    }
