"""Prompt files: the prompt sets of ``diffalign sample --prompts FILE`` and of training configs.

Two formats, chosen by the file's suffix, as every peer uses them (Flow-GRPO, DanceGRPO, GenEval):

* ``.txt``: one prompt a line. Empty lines are skipped; a line of only spaces is an error.
* ``.jsonl``: one JSON object a line, ``{"prompt": "...", ...}``. Every other field is the prompt's
  *metadata*, passed to rewards that read it (e.g. a GenEval-style ``category``, or the objects to find).

Every problem is one line that names the file and the line: an unknown suffix, an empty file, a
blank prompt, bytes that are not UTF-8, a line that is not a JSON object with a string ``prompt``.
Nothing here imports torch, so the command line refuses a bad file before paying for it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from .errors import DiffalignError

__all__ = ["PromptSet", "read_prompt_file", "PROMPT_FILE_FORMATS"]

PROMPT_FILE_FORMATS = (".txt", ".jsonl")


@dataclass(frozen=True)
class PromptSet:
    """Prompts in file order, and one metadata dict per prompt (None for a txt file)."""

    prompts: tuple[str, ...]
    metadata: Optional[tuple[dict, ...]]
    path: str

    def __len__(self) -> int:
        return len(self.prompts)


def read_prompt_file(path, what: str = "prompt file") -> PromptSet:
    """Read and check a ``.txt`` or ``.jsonl`` prompt file (see the module docstring)."""
    path = Path(path)
    if path.suffix not in PROMPT_FILE_FORMATS:
        raise DiffalignError(f"{what} {path}: unknown format {path.suffix or '(no suffix)'!r}; valid choices: "
                             f"{', '.join(PROMPT_FILE_FORMATS)} (one prompt a line, or one JSON object a line)")
    if path.is_dir():
        raise DiffalignError(f"{what} {path} is a directory; expected a {' or '.join(PROMPT_FILE_FORMATS)} file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DiffalignError(f"{what} {path} does not exist") from None
    except OSError as error:
        raise DiffalignError(f"cannot read {what} {path}: {error.strerror or error}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[:error.start].count(b"\n") + 1
        raise DiffalignError(f"{what} {path}, line {line}: bytes that are not UTF-8 (byte {error.start}); "
                             "save the file as UTF-8") from None
    prompts, metadata = [], []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line:
            continue
        where = f"{what} {path}, line {number}"
        if path.suffix == ".txt":
            if not line.strip():
                raise DiffalignError(f"{where}: blank prompt (a line of only spaces)")
            prompts.append(line.strip())
            continue
        prompt, fields = _jsonl_entry(line, where)
        prompts.append(prompt)
        metadata.append(fields)
    if not prompts:
        raise DiffalignError(f"{what} {path} has no prompts (expected one prompt a line)")
    return PromptSet(tuple(prompts), tuple(metadata) if path.suffix == ".jsonl" else None, str(path))


def _jsonl_entry(line: str, where: str) -> tuple[str, dict]:
    if not line.strip():
        raise DiffalignError(f"{where}: blank line (expected a JSON object with a \"prompt\" field)")
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as error:
        raise DiffalignError(f"{where}: not valid JSON ({error.msg}, column {error.colno})") from None
    if not isinstance(entry, dict):
        raise DiffalignError(f"{where}: expected a JSON object {{\"prompt\": ...}}, got {type(entry).__name__}")
    prompt = entry.pop("prompt", None)
    if not isinstance(prompt, str):
        raise DiffalignError(f"{where}: needs a \"prompt\" string field; got {prompt!r:.60}")
    if not prompt.strip():
        raise DiffalignError(f"{where}: blank prompt")
    return prompt.strip(), entry


def balance_groups(prompt_set: PromptSet, key: str) -> list[list[int]]:
    """Prompt indices grouped by the value of metadata ``key`` (groups in order of first appearance).

    Training with ``data.balance_by: key`` draws a group uniformly, then a prompt within it, so a
    category with few prompts (GenEval's position prompts are a minority of most prompt sets) is
    trained as often as a large one. Every row of a ``.jsonl`` file must carry ``key``.
    """
    if prompt_set.metadata is None:
        raise DiffalignError(f"config key 'data.balance_by' is {key!r}, but {prompt_set.path} is a .txt file with no "
                             "metadata; use a .jsonl prompt file whose rows carry that key")
    groups: dict = {}
    for index, meta in enumerate(prompt_set.metadata):
        if key not in meta:
            valid = sorted(k for k in meta if k != "prompt")
            raise DiffalignError(f"config key 'data.balance_by' is {key!r}, but row {index + 1} of {prompt_set.path} "
                                 f"has no such field; its fields: {', '.join(valid) or '(none)'}")
        groups.setdefault(json.dumps(meta[key], sort_keys=True), []).append(index)
    return list(groups.values())
