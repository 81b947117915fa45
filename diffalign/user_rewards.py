"""Your own reward at the command line: ``--reward FILE.py:NAME`` or ``--reward package.module:NAME``.

``NAME`` is a callable ``images -> (B,)`` (or ``(images, prompts) -> (B,)``, which then receives each
image's prompt, and ``metadata`` too if it names it), or a :class:`~diffalign.rewards.Reward` class,
built with the ``--reward-option`` values. This is how a reward outside the registry -- a lab's own
scorer, a GenEval variant -- reaches ``diffalign sample`` without a plugin.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path

from .errors import DiffalignError

__all__ = ["load_user_reward"]


def load_user_reward(spec: str, options: dict):
    """The :class:`~diffalign.rewards.Reward` named by ``spec`` (see the module docstring)."""
    from .rewards import as_reward

    source, _, name = spec.rpartition(":")
    if not source or not name.isidentifier():
        raise DiffalignError(f"--reward {spec!r}: expected FILE.py:NAME or package.module:NAME")
    module = _import(source, spec)
    target = getattr(module, name, None)
    if target is None:
        raise DiffalignError(f"--reward {spec!r}: {source} defines no {name!r}")
    if inspect.isclass(target):
        try:
            return as_reward(target(**options))
        except TypeError as error:
            raise DiffalignError(f"--reward {spec!r}: cannot build {name} with options {options}: {error}") from None
    if options:
        raise DiffalignError(f"--reward {spec!r} is a function; --reward-option values need a Reward class")
    if not callable(target):
        raise DiffalignError(f"--reward {spec!r}: {name} is not callable (expected a function or a Reward class)")
    return as_reward(target)


def _import(source: str, spec: str):
    if source.endswith(".py"):
        path = Path(source)
        if not path.is_file():
            raise DiffalignError(f"--reward {spec!r}: {path} does not exist")
        module_spec = importlib.util.spec_from_file_location(f"diffalign_user_reward_{path.stem}", path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_spec.name] = module
        module_spec.loader.exec_module(module)
        return module
    try:
        return importlib.import_module(source)
    except ImportError as error:
        raise DiffalignError(f"--reward {spec!r}: cannot import {source} ({error})") from None
