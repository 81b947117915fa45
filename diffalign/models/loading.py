"""File reading with clear errors: a missing or corrupt file names itself and what to do; and where a
training run directory keeps what it made (its ``final/``)."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import DiffalignError


def read_json(path: Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise DiffalignError(f"missing file {path}")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise DiffalignError(f"corrupt JSON in {path}: {err}") from None


def load_safetensors(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise DiffalignError(f"missing weights file {path}")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise DiffalignError(f"corrupt weights file {path}: {err}") from None


def run_final_dir(path: Path, marker: str) -> Path:
    """A training run directory stands for its ``final/``: ``path/final`` when ``path`` lacks ``marker``
    and ``path/final`` has it (``--lora RUN_DIR`` and ``--option path=RUN_DIR`` agree)."""
    path = Path(path).expanduser()
    if path.is_dir() and not (path / marker).is_file() and (path / "final" / marker).is_file():
        return path / "final"
    return path
