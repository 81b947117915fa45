"""Training checkpoints: safetensors files in a directory that appears atomically.

``DIR/checkpoints/step-000040/`` holds

* ``trainable.safetensors`` -- the trained parameters (LoRA or full), by parameter name;
* ``optimizer.safetensors`` -- every optimizer state tensor (param-group settings in the metadata);
* ``ema.safetensors`` -- the EMA weights, when EMA is on;
* ``rng.safetensors`` -- the torch (CPU and CUDA) and numpy generator states;
* ``state.json`` -- step, data position, LR-scheduler and Python RNG state, and the SHA-256 of every
  file above.

Under ``train.sharding: fsdp`` on several processes the checkpoint is sharded instead
(:mod:`.sharded_checkpoint`: DCP shard files, ``"format": "dcp"`` in state.json); the checks below
cover both.

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
STATE_HASH = "state_sha256"
_FILE_NAME = re.compile(r"[a-z_]+\.safetensors")
#: the files of a sharded (DCP) checkpoint besides rng.safetensors: each rank's shards and DCP's index
_SHARD_FILE = re.compile(r"shards/(__\d+_\d+\.distcp|\.metadata)")
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
    # safetensors refuses tensors that share storage (bitsandbytes' quantisation maps are one tensor shared by
    # every parameter's state): the repeats are written as copies
    seen = set()
    for key, value in tensors.items():
        if value.numel() and value.data_ptr() in seen:
            tensors[key] = value.clone()
        seen.add(value.data_ptr())
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
    """An optimizer state dict as flat tensors ``<param index>.<name>`` and JSON metadata (param groups and
    non-tensor values). A nested dict of state (bitsandbytes keeps its 8-bit moments and their quantisation
    maps under ``__bnb_optimizer_quant_state__``) is flattened one level: ``<index>.<name>/<key>``."""
    tensors, scalars = {}, {}
    for index, per_param in state_dict["state"].items():
        flat = {}
        for name, value in per_param.items():
            if isinstance(value, dict):
                flat.update({f"{name}/{key}": inner for key, inner in value.items()})
            else:
                flat[name] = value
        for name, value in flat.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{name}"] = value
            else:
                scalars[f"{index}.{name}"] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def optimizer_state_dict(tensors: dict[str, torch.Tensor], metadata: dict) -> dict:
    state: dict[int, dict] = {}
    for key, value in list(tensors.items()) + list(metadata["scalars"].items()):
        index, name = key.split(".", 1)
        if "/" in name:
            outer, inner = name.split("/", 1)
            state.setdefault(int(index), {}).setdefault(outer, {})[inner] = value
        else:
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


def restore_rng(tensors: dict[str, torch.Tensor], python_state, where: Path | None = None) -> None:
    """Restore every generator; a malformed state is one line naming the checkpoint."""
    try:
        _restore_rng(tensors, python_state)
    except (KeyError, IndexError, ValueError, TypeError, RuntimeError) as err:
        raise DiffalignError(f"corrupt checkpoint RNG state in {where or 'the checkpoint'} ({type(err).__name__}); "
                             "delete that checkpoint to resume from the previous one") from None


def _restore_rng(tensors: dict[str, torch.Tensor], python_state) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    rest = tensors["numpy.rest"].tolist()
    np.random.set_state(("MT19937", tensors["numpy.keys"].numpy().astype(np.uint32), int(rest[0]), int(rest[1]),
                         float(tensors["numpy.cached"][0])))
    random.setstate((python_state[0], tuple(python_state[1]), python_state[2]))


def check_finite(tensors: dict[str, torch.Tensor], what: str) -> None:
    """Refuse NaN/inf weights: a checkpoint or adapter holding them would be saved with exit 0 and
    poison every later resume or sample."""
    for name, tensor in tensors.items():
        if torch.is_tensor(tensor) and tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise DiffalignError(f"{what}: parameter {name!r} holds non-finite values (NaN or inf); refusing to use them")


# -- save / load -------------------------------------------------------------------------------
def save_checkpoint(root: Path, step: int, *, trainable: dict[str, torch.Tensor], optimizer: dict,
                    scheduler: dict, ema: Optional[dict[str, torch.Tensor]], extra: dict, keep: int) -> Path:
    target = checkpoint_dir(root, step)
    check_finite(trainable, f"checkpoint {target}")
    if ema is not None:
        check_finite(ema, f"checkpoint {target} (EMA)")
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
        state[STATE_HASH] = _state_hash(state)
        (tmp / STATE_FILE).write_text(json.dumps(state, indent=1))
    prune_checkpoints(root, keep)
    return target


def prune_checkpoints(root: Path, keep: int) -> None:
    """Delete all but the ``keep`` most recent checkpoints."""
    for _, old in list_checkpoints(root)[:-keep]:
        # rename first (atomic): a kill during rmtree leaves a hidden .step-* directory, which the
        # next run deletes, never a half-deleted step-* that still looks complete
        doomed = old.with_name(f".{old.name}.pruned-{os.getpid()}")
        os.replace(old, doomed)
        shutil.rmtree(doomed, ignore_errors=True)


def _state_hash(state: dict) -> str:
    """SHA-256 of state.json's content without this hash (canonical JSON): an edited step, file list
    or RNG state no longer matches."""
    body = {k: v for k, v in state.items() if k != STATE_HASH}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _check_state(state, directory: Path, state_path: Path) -> None:
    """state.json's schema, its own hash, its step against the directory name and its file list
    against the directory's files; every failure is one line naming the file."""
    def bad(what: str):
        return DiffalignError(f"corrupt checkpoint file {state_path} ({what}); delete {directory} to resume from the previous checkpoint")

    if not isinstance(state, dict):
        raise bad("not a JSON object")
    missing = [k for k in ("step", "scheduler", "python_rng", "sha256") if k not in state]
    if missing:
        raise bad(f"missing key {missing[0]!r}")
    step = state["step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise bad(f"step {step!r} is not a non-negative integer")
    if STATE_HASH in state and state[STATE_HASH] != _state_hash(state):
        raise bad("its content does not match its own hash: edited")
    match = PATTERN.match(directory.name)
    if match and int(match.group(1)) != step:
        raise bad(f"step {step} does not match the directory name {directory.name}")
    if not isinstance(state["scheduler"], dict) or not isinstance(state.get("extra", {}), dict):
        raise bad("scheduler and extra must be objects")
    rng = state["python_rng"]
    if not (isinstance(rng, list) and len(rng) == 3 and isinstance(rng[1], list) and len(rng[1]) == 625
            and all(isinstance(v, int) and not isinstance(v, bool) for v in rng[1])):
        raise bad("python_rng is not a Python random state")
    checksums = state["sha256"]
    if not isinstance(checksums, dict) or not all(isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) for v in checksums.values()):
        raise bad("sha256 must map file names to SHA-256 digests")
    sharded = state.get("format") == "dcp"
    if state.get("format", "safetensors") not in ("safetensors", "dcp"):
        raise bad(f"format {state.get('format')!r} is not one of safetensors, dcp")
    outside = [name for name in checksums if not (isinstance(name, str) and (
        _FILE_NAME.fullmatch(name) or (sharded and _SHARD_FILE.fullmatch(name))))]
    if outside:
        raise bad(f"file name {outside[0]!r} is not a plain checkpoint file name (a path outside the checkpoint?)")
    required = ({"rng.safetensors", "shards/.metadata"} if sharded
                else {"trainable.safetensors", "optimizer.safetensors", "rng.safetensors"})
    if not required <= set(checksums):
        raise bad(f"its file list lacks {sorted(required - set(checksums))[0]}")
    present = {child.name for child in directory.iterdir()} - {STATE_FILE}
    if sharded and (directory / "shards").is_dir():
        present = (present - {"shards"}) | {f"shards/{child.name}" for child in (directory / "shards").iterdir()}
    if present != set(checksums):
        extra = sorted(present - set(checksums))
        raise bad(f"the directory holds {extra[0]!r}, which its file list does not name" if extra
                  else f"its file list names {sorted(set(checksums) - present)[0]!r}, which is missing")


def load_checkpoint(directory: Path) -> dict:
    """Read and verify a checkpoint; returns its parts (tensors on CPU).

    Every check fails with one line naming the file: state.json's schema and own hash, its step
    against the directory name, its file list against the directory (no path may leave it), each
    file's SHA-256, and finite weights.
    """
    directory = Path(directory)
    state_path = directory / STATE_FILE
    try:
        state = json.loads(state_path.read_text())
    except (OSError, ValueError) as err:
        raise DiffalignError(f"corrupt checkpoint file {state_path} ({type(err).__name__}); delete {directory} to resume from the previous checkpoint") from None
    _check_state(state, directory, state_path)
    if state.get("format") == "dcp":
        raise DiffalignError(f"checkpoint {directory} is sharded (DCP); it is read by sharded_checkpoint.load_sharded_checkpoint")
    parts = {}
    for name, expected in state["sha256"].items():
        path = directory / name
        if not path.is_file() or _sha256(path) != expected:
            raise DiffalignError(f"corrupt checkpoint file {path} (missing or checksum mismatch); delete {directory} to resume from the previous checkpoint")
        try:
            parts[name] = _load_tensors(path)
        except Exception as err:  # a file whose checksum matches but which safetensors cannot read
            raise DiffalignError(f"corrupt checkpoint file {path} ({type(err).__name__}); delete {directory} to resume from the previous checkpoint") from None
    trainable = parts["trainable.safetensors"][0]
    try:
        check_finite(trainable, f"checkpoint file {directory / 'trainable.safetensors'}")
        if "ema.safetensors" in parts:
            check_finite(parts["ema.safetensors"][0], f"checkpoint file {directory / 'ema.safetensors'}")
    except DiffalignError as err:
        raise DiffalignError(f"{err}; delete {directory} to resume from the previous checkpoint") from None
    try:
        optimizer = optimizer_state_dict(*parts["optimizer.safetensors"])
    except (KeyError, ValueError, TypeError, AttributeError):
        raise DiffalignError(f"corrupt checkpoint file {directory / 'optimizer.safetensors'} (not an optimizer state); "
                             f"delete {directory} to resume from the previous checkpoint") from None
    return {
        "step": int(state["step"]),
        "trainable": trainable,
        "optimizer": optimizer,
        "rng": parts["rng.safetensors"][0],
        "ema": parts["ema.safetensors"][0] if "ema.safetensors" in parts else None,
        "scheduler": state["scheduler"],
        "python_rng": state["python_rng"],
        "extra": state.get("extra", {}),
        "directory": directory,
    }
