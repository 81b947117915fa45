"""The reward registry: ``get(name, **options)`` builds a reward, ``names()`` lists them.

Each reward class registers itself with ``@REWARDS.register(name)`` in its own module;
:mod:`diffalign.rewards` imports those modules, so ``import diffalign.rewards`` is all it takes
for every name to be known. Options are checked against the reward's constructor before it
is called, so an unknown or missing option is a :class:`~diffalign.errors.DiffalignError`
that names it and lists the valid ones (rather than a bare ``TypeError``).
"""

from __future__ import annotations

import inspect

from ..errors import DiffalignError
from ..registry import Registry

__all__ = ["REWARDS", "RewardRegistry", "get", "names"]


class RewardRegistry(Registry):
    """A :class:`~diffalign.registry.Registry` whose ``get`` validates option names first."""

    def get(self, name: str, **options):
        if name in self:
            _check_options(self.kind, name, self._factories[name], options)
        return super().get(name, **options)


def _check_options(kind: str, name: str, factory, options: dict) -> None:
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):  # no introspectable signature: let the factory decide
        return
    named = {
        key: p for key, p in params.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = sorted(set(options) - set(named))
    if unknown and not takes_any:
        valid = ", ".join(named) or "(none)"
        raise DiffalignError(f"unknown option(s) {', '.join(unknown)} for {kind} {name!r}; valid options: {valid}")
    missing = [key for key, p in named.items() if p.default is inspect.Parameter.empty and key not in options]
    if missing:
        raise DiffalignError(f"{kind} {name!r} needs option(s): {', '.join(missing)}")


REWARDS = RewardRegistry("reward")


def get(name: str, **options):
    """Build the reward registered as ``name`` with the given options."""
    return REWARDS.get(name, **options)


def names() -> list[str]:
    """Sorted names of all registered rewards."""
    return REWARDS.names()
