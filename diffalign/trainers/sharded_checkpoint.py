"""Sharded training checkpoints (``train.sharding: fsdp`` on several processes) with PyTorch's
``torch.distributed.checkpoint`` (DCP): each process writes its own shards, nothing is gathered.

``DIR/checkpoints/step-000040/`` then holds

* ``shards/__<rank>_0.distcp`` -- rank r's pieces of the trainable weights, AdamW's moments and the EMA;
* ``shards/.metadata`` -- DCP's index: every tensor's global shape and which file holds which chunk;
* ``rng.safetensors`` -- the generator states (rank 0's; every process restores them, as unsharded);
* ``state.json`` -- ``"format": "dcp"``, step, data position, LR scheduler, AdamW's param groups, the EMA
  step, Python's RNG state, and the SHA-256 of every file above (each rank hashes the files it wrote).

Atomic as the unsharded format is: rank 0 creates a temporary sibling directory, every rank writes into
it, and rank 0 renames it into place once all hashes are in, so a SIGKILL leaves a complete checkpoint or
none (the temporary ``.step-*`` directory is deleted by the next run). Loading checks state.json and the
hashes (each process checks every P-th file) before DCP reads anything.

**Resharding.** DCP records each tensor's global shape, so a checkpoint written by P processes loads onto
any other number of processes, sharded or not (``dcp.load`` fills whatever tensors the run holds: DTensor
shards or whole tensors). The loaded values are bit for bit those saved; what differs after a change of P
is the arithmetic of later steps (FSDP's reduce-scatter sums gradients in another order than one process).
"""

from __future__ import annotations

import contextlib
import json
import random
from pathlib import Path

import torch

from ..atomic import atomic_directory
from ..errors import DiffalignError
from . import checkpoint as ckpt

SHARDS = "shards"
FORMAT = "dcp"


def _collective():
    import torch.distributed as dist

    return dist if dist.is_available() and dist.is_initialized() else None


@contextlib.contextmanager
def _single_process_is_intended():
    """DCP warns on every save and load without a process group; one process reading a checkpoint that
    several wrote (2 -> 1) is a supported resume, not a mistake."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is (disabled, )?unavailable or uninitialized")
        yield


def _gather_objects(value) -> list:
    dist = _collective()
    if dist is None:
        return [value]
    found = [None] * dist.get_world_size()
    dist.all_gather_object(found, value)
    return found


def _broadcast_object(value):
    dist = _collective()
    if dist is None:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _rank() -> int:
    dist = _collective()
    return dist.get_rank() if dist is not None else 0


def _nonfinite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of tensors whose local part (a DTensor's shard) holds NaN or inf."""
    from .sharding import local_tensor

    return [name for name, t in tensors.items()
            if t.is_floating_point() and not bool(torch.isfinite(local_tensor(t)).all())]


def save_sharded_checkpoint(root: Path, step: int, *, tensors: dict[str, torch.Tensor], param_groups: list,
                            scheduler: dict, extra: dict, keep: int) -> Path | None:
    """Write a DCP checkpoint of ``tensors`` (flat names -> DTensors or plain tensors; a collective: every
    process calls it with the same names). Returns the directory (None when one for ``step`` exists)."""
    import torch.distributed.checkpoint as dcp

    target = ckpt.checkpoint_dir(root, step)
    rank = _rank()
    exists = _broadcast_object(any(s == step for s, _ in ckpt.list_checkpoints(root)) if rank == 0 else None)
    if exists:
        return None
    bad = sorted({name for names in _gather_objects(_nonfinite(tensors)) for name in names})
    if bad:  # the same line on every process, before anything is written
        raise DiffalignError(f"checkpoint {target}: parameter {bad[0]!r} holds non-finite values (NaN or inf); refusing to use them")
    with (atomic_directory(target) if rank == 0 else contextlib.nullcontext()) as tmp:
        tmp = Path(_broadcast_object(str(tmp) if rank == 0 else None))
        with _single_process_is_intended():
            dcp.save(tensors, storage_writer=dcp.FileSystemWriter(str(tmp / SHARDS), sync_files=True), no_dist=_collective() is None)
        mine = {f"{SHARDS}/{path.name}": ckpt._sha256(path) for path in sorted((tmp / SHARDS).glob(f"__{rank}_*.distcp"))}
        checksums = {name: digest for part in _gather_objects(mine) for name, digest in part.items()}
        if rank == 0:
            ckpt._save_tensors(ckpt.rng_tensors(), tmp / "rng.safetensors")
            for name in (f"{SHARDS}/.metadata", "rng.safetensors"):
                checksums[name] = ckpt._sha256(tmp / name)
            state = {"format": FORMAT, "step": step, "scheduler": scheduler, "python_rng": list(random.getstate()),
                     "extra": {**extra, "param_groups": param_groups}, "sha256": dict(sorted(checksums.items()))}
            state[ckpt.STATE_HASH] = ckpt._state_hash(state)
            (tmp / ckpt.STATE_FILE).write_text(json.dumps(state, indent=1))
    _broadcast_object(None)  # the others wait for the rename (a failure on rank 0 surfaces there as its own error)
    if rank == 0:
        ckpt.prune_checkpoints(root, keep)
    return target


def is_sharded_checkpoint(directory: Path) -> bool:
    try:
        return json.loads((Path(directory) / ckpt.STATE_FILE).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False  # the unsharded loader reports a corrupt state.json in its own words


def load_sharded_checkpoint(directory: Path) -> dict:
    """Check a DCP checkpoint (state.json; this process's share of the file hashes; then every process
    learns of any failure, so all raise the same one line) and return its parts but the tensors, which
    :func:`read_sharded_tensors` fills in."""
    directory = Path(directory)
    state_path = directory / ckpt.STATE_FILE
    problem = None
    try:
        state = json.loads(state_path.read_text())
        ckpt._check_state(state, directory, state_path)
        dist = _collective()
        rank, world = (dist.get_rank(), dist.get_world_size()) if dist is not None else (0, 1)
        for index, (name, expected) in enumerate(sorted(state["sha256"].items())):
            path = directory / name
            if index % world == rank and (not path.is_file() or ckpt._sha256(path) != expected):
                raise DiffalignError(f"corrupt checkpoint file {path} (missing or checksum mismatch); delete {directory} "
                                     "to resume from the previous checkpoint")
    except (OSError, ValueError) as err:  # DiffalignError is a ValueError
        problem = str(err) if isinstance(err, DiffalignError) else (
            f"corrupt checkpoint file {state_path} ({type(err).__name__}); delete {directory} to resume from the previous checkpoint")
    problems = [p for p in _gather_objects(problem) if p]
    if problems:
        raise DiffalignError(problems[0])
    rng, _ = ckpt._load_tensors(directory / "rng.safetensors")
    return {"step": int(state["step"]), "rng": rng, "scheduler": state["scheduler"], "python_rng": state["python_rng"],
            "extra": state.get("extra", {}), "directory": directory, "sharded": True}


def read_sharded_tensors(directory: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Fill ``tensors`` (flat names -> this run's DTensor shards or whole tensors) in place from the
    checkpoint, resharding from however many processes wrote it."""
    import torch.distributed.checkpoint as dcp

    from torch.distributed.checkpoint.api import CheckpointException

    try:
        with _single_process_is_intended():
            dcp.load(tensors, storage_reader=dcp.FileSystemReader(str(Path(directory) / SHARDS)), no_dist=_collective() is None)
    except (Exception, CheckpointException) as err:  # names or shapes of another model or method
        # DCP wraps each rank's traceback; its last line is the cause ("Missing key in checkpoint state_dict: ...")
        cause = (str(err).strip().splitlines() or [type(err).__name__])[-1].strip()
        raise DiffalignError(f"checkpoint {directory} does not match this run's trainable parameters or optimizer "
                             f"({cause[:200]})") from None
